"""The ``harness`` command.

User mistakes (bad YAML, missing files, unset key variables) print one short message and exit 2;
a run with failed judge calls exits 1; a run stopped by ``--max-cost`` exits 3; interrupted runs say how
to resume.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import cli_compare, cli_data, cli_distill, cli_export, cli_view
from harness.errors import ConfigError, HarnessError

if TYPE_CHECKING:
    from harness.engine.runner import RunResult
    from harness.rundir import RunData
    from harness.schema import JudgeUsage, RunManifest

EXIT_BUDGET = 3  # stopped by --max-cost: nothing half-written, rerun to continue


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="judge a suite against a constitution")
    p.add_argument(
        "suite", nargs="?", default="demo", help="suite file or built-in name (default: demo)"
    )
    p.add_argument(
        "--constitution", "-c", help="constitution file or built-in name (default: the suite's)"
    )
    p.add_argument(
        "--judge", "-j", action="append", default=[], help="judge config or built-in (repeatable)"
    )
    p.add_argument(
        "--out", type=Path, default=Path("reports"), help="output root (default: reports/)"
    )
    p.add_argument(
        "--run-id", help="run folder name (default: suite id + input hash, so reruns resume)"
    )
    p.add_argument("--resume", type=Path, metavar="RUN", help="complete an interrupted run folder")
    p.add_argument(
        "--trust-suite-judges",
        action="store_true",
        help="let the judges the suite lists itself (its judges:) read secrets such as API keys "
        "from the environment; without it only judges named with --judge may",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the judge cache")
    p.add_argument(
        "--refresh", action="store_true", help="ignore cached answers (still writes new ones)"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    p.add_argument(
        "--max-cost",
        type=_usd,
        metavar="USD",
        help="stop starting judge calls once this invocation has spent USD (judge configs set "
        "price_per_million_input/output); calls in flight finish and are saved; rerun to continue",
    )
    p.add_argument(
        "--pairwise", action="store_true", help="also compare candidates pairwise (both orders)"
    )
    p.add_argument(
        "--pairwise-only", action="store_true", help="pairwise judging only, no pointwise scores"
    )
    p.add_argument(
        "--single-order", action="store_true", help="pairwise in one (seeded random) order only"
    )
    p.add_argument(
        "--tournament",
        type=int,
        metavar="N",
        help="with K > 6 candidates, N opponents per candidate",
    )
    p.add_argument(
        "--target-ci",
        type=float,
        metavar="W",
        help="stop judging a principle × generator once its 95%% CI half-width (0..1 scale) is below W",
    )
    p.add_argument(
        "--principle",
        "-p",
        action="append",
        default=[],
        help="judge only this principle (repeatable)",
    )
    p.add_argument(
        "--labelled-only",
        action="store_true",
        help="judge human-labelled cases only on the principle their label is about",
    )
    p.add_argument(
        "--max-cases", type=int, metavar="N", help="judge a seeded random sample of N cases"
    )
    p.set_defaults(func=cmd_run)


def _usd(text: str) -> float:
    """A positive amount of US dollars (``--max-cost``)."""
    try:
        value = float(text.lstrip("$"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an amount of US dollars: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    from harness.engine.runner import RunOptions, resume, run

    common: dict[str, Any] = dict(
        use_cache=not args.no_cache,
        refresh=args.refresh,
        quiet=args.quiet,
        max_cost=args.max_cost,
        trust_suite_judges=args.trust_suite_judges,
    )
    if args.resume:
        result = resume(args.resume, **common)
    else:
        result = run(
            RunOptions(
                suite=args.suite,
                constitution=args.constitution,
                judges=args.judge,
                out=args.out,
                run_id=args.run_id,
                seed=args.seed,
                **common,
                **_protocol_options(args),
            )
        )
    from harness.report.render import render_report
    from harness.rundir import read_run

    data = read_run(result.run_dir)  # read once: the summary, the accounting and the report
    _print_summary(data)
    print(format_accounting(result, data.manifest))
    render_report(data)
    c = result.counts
    print(f"\nverdicts: {c['scored']} scored, {c['unscored']} unscored, {c['error']} errors")
    if result.skipped:
        print(f"adaptive stopping (--target-ci): {result.skipped} items were not needed")
    print(f"run folder: {result.run_dir}\nreport: {result.run_dir / 'report.html'}")
    if result.left:
        print(
            f"stopped: the --max-cost budget of ${args.max_cost:g} was reached; {result.left} items were not "
            "started (no row is half-written). Run the same command again, with a larger --max-cost if "
            "needed, to continue.",
            file=sys.stderr,
        )
        return EXIT_BUDGET
    return 1 if c["error"] else 0


def format_accounting(result: RunResult, manifest: RunManifest) -> str:
    """What this invocation did per judge (calls, retries by cause, cache hits, tokens, spend) and run spend."""
    session = result.session
    if session is None:
        return "\nnothing left to judge: every item already has a verdict in the run folder (0 judge calls)"
    lines = [f"\njudge calls ({session.elapsed_s:.1f}s):"]
    for judge, u in session.judges.items():
        causes = ", ".join(f"{k}: {n}" for k, n in u.retries.items())
        retries = f"{sum(u.retries.values())} ({causes})" if causes else "0"
        spend = (
            f"${u.spend_usd:.4f}" if u.spend_usd is not None else "spend not tracked (no prices)"
        )
        cut = (
            f", concurrency cut to {u.lowest_concurrency} by 429s"
            if _was_cut(manifest, judge, u)
            else ""
        )
        lines.append(
            f"  {judge}: {u.calls} calls for {u.items} items, retries {retries}, cache hits "
            f"{u.cache_hits}, tokens {u.tokens_in:,} in / {u.tokens_out:,} out, {spend}{cut}"
        )
    lines.append(f"  generation: ${session.generation_spend_usd:.4f}")
    total = manifest.spend.total if manifest.spend else session.spend_usd
    lines.append(f"spend: ${session.spend_usd:.4f} this invocation, ${total:.4f} for the whole run")
    return "\n".join(lines)


def _was_cut(manifest: RunManifest, judge: str, usage: JudgeUsage) -> bool:
    """Whether 429s held the judge's concurrency below what its config allows."""
    configured = next(
        (c.get("max_concurrency") for c in manifest.judge_configs if c.get("id") == judge), None
    )
    return (
        isinstance(configured, int)
        and usage.lowest_concurrency is not None
        and usage.lowest_concurrency < configured
    )


def _protocol_options(args: argparse.Namespace) -> dict[str, Any]:
    from harness.engine.plan import PairPlan

    pairs = PairPlan(
        both_orders=not args.single_order,
        **({"max_all_pairs_k": 6, "opponents": args.tournament} if args.tournament else {}),
    )
    return {
        "pointwise": not args.pairwise_only,
        "pairwise": args.pairwise or args.pairwise_only,
        "pairs": pairs,
        "target_ci": args.target_ci,
        "principles": args.principle,
        "labelled_only": args.labelled_only,
        "max_cases": args.max_cases,
    }


def _print_summary(data: RunData) -> None:
    from harness.analysis.scores import summary

    table = summary(data.verdicts, data.constitution, n_boot=500)
    if table.empty:
        print("no scored verdicts")
        return
    print(format_summary(table))


def format_summary(table: object) -> str:
    """Principle × generator mean scores (with 95 % CI) per judge, as plain text."""
    import pandas as pd

    assert isinstance(table, pd.DataFrame)
    cells = table.assign(
        cell=[
            f"{m:.2f} [{lo:.2f},{hi:.2f}]" if pd.notna(m) else "-"
            for m, lo, hi in zip(table["mean"], table["ci_low"], table["ci_high"], strict=True)
        ]
    )
    wide = cells.pivot_table(
        index=["judge", "principle"],
        columns="generator",
        values="cell",
        aggfunc="first",
        sort=False,
    )
    return wide.to_string()


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report.render import render_report

    print(render_report(args.run))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from harness.config import validate_file
    from harness.errors import ValidationFailed

    failed = 0
    for path in args.files:
        try:
            kind = validate_file(Path(path))
            print(f"{path}: ok ({kind})")
        except ValidationFailed as exc:
            failed += 1
            print(str(exc), file=sys.stderr)
        except ConfigError as exc:
            failed += 1
            print(f"{exc}", file=sys.stderr)
    return 2 if failed else 0


def cmd_schemas(args: argparse.Namespace) -> int:
    from harness import schemas_gen

    if args.check:
        bad = schemas_gen.stale()
        for name in bad:
            print(f"stale: harness/schemas/{name}", file=sys.stderr)
        return 1 if bad else 0
    for path in schemas_gen.write():
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness", description="Judge model outputs against a constitution."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    p = sub.add_parser("report", help="rebuild a run's HTML report from its folder")
    p.add_argument("run", type=Path)
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("validate", help="check constitutions, suites and judge configs")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("schemas", help="regenerate the JSON Schemas in harness/schemas/")
    p.add_argument("--check", action="store_true", help="only report stale schemas")
    p.set_defaults(func=cmd_schemas)
    cli_compare.add_parser(sub)
    cli_data.add_parsers(sub)
    cli_export.add_parser(sub)
    cli_distill.add_parser(sub)
    cli_view.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``harness`` command."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted: verdicts so far are saved; run the same command again to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
