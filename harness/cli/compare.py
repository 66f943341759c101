"""``harness compare BASE CAND``: the regression gate for CI.

Exit codes: 0 no regression, 1 at least one regression, 2 bad input (not a run folder, nothing to
pair, bad option); the last comes from :func:`harness.cli.main`, which prints a ``HarnessError`` and
returns 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1)")
    return value


def _alpha(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1)")
    return value


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``compare`` subcommand to the ``harness`` command's subparsers."""
    p = sub.add_parser(
        "compare",
        help="compare two runs case by case; exit 1 on a regression",
        description="Compare a candidate run with a baseline run judged on the same suite.",
    )
    p.add_argument("base", type=Path, help="baseline run folder")
    p.add_argument("cand", type=Path, help="candidate run folder")
    p.add_argument(
        "--max-drop",
        type=_fraction,
        default=0.0,
        metavar="D",
        help="largest tolerated drop, as a fraction of the rubric scale (or of the pass rate with "
        "--metric pass_rate); default 0",
    )
    p.add_argument(
        "--alpha", type=_alpha, default=0.05, metavar="A", help="significance level (default 0.05)"
    )
    p.add_argument(
        "--metric",
        choices=["score", "pass_rate"],
        default="score",
        help="what the gate tests: mean score (permutation test) or pass rate (McNemar)",
    )
    p.add_argument(
        "--adjust",
        choices=["none", "holm"],
        default="none",
        help="adjust gate p-values across principle x judge rows (default none)",
    )
    p.add_argument(
        "--base-generator", metavar="NAME", help="pair only this generator of the base run"
    )
    p.add_argument(
        "--cand-generator", metavar="NAME", help="pair only this generator of the candidate run"
    )
    p.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML here")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="write a Markdown summary here")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the bootstrap and permutation draws"
    )
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    """Run the comparison, print the table, write the requested files; 1 when anything regressed."""
    from harness.analysis.compare import (
        CompareOptions,
        compare_runs,
        format_table,
        to_junit,
        to_markdown,
    )
    from harness.report.render import save_comparison
    from harness.rundir import read_run, write_atomic

    options = CompareOptions(
        max_drop=args.max_drop,
        alpha=args.alpha,
        metric=args.metric,
        adjust=args.adjust,
        seed=args.seed,
    )
    result = compare_runs(
        read_run(args.base),
        read_run(args.cand),
        options,
        base_generator=args.base_generator,
        cand_generator=args.cand_generator,
    )
    print(format_table(result))
    for path, text in ((args.junit, to_junit), (args.markdown, to_markdown)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, text(result))
    print(f"comparison section: {save_comparison(args.cand, result.to_dict())}")
    return 1 if result.rows["regression"].any() else 0
