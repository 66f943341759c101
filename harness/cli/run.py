"""``harness run``: judge a suite against a constitution (exit 3 when ``--max-cost`` stops it)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_BUDGET = 3  # stopped by --max-cost: nothing half-written, rerun to continue


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``run`` to the ``harness`` subcommands."""
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
    _add_executor(p)
    p.add_argument(
        "--no-prescreen",
        action="store_true",
        help="let the judges score empty, master-key and judge-addressed answers themselves",
    )
    p.set_defaults(func=cmd_run)


def _add_executor(p: argparse.ArgumentParser) -> None:
    """Where the judge calls run: in this process, or on Ray actors (needs the ``ray`` extra)."""
    g = p.add_argument_group("executor")
    g.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: asyncio in this process (default); ray: pools of Ray actors, this process "
        "stays the only writer (pip install 'constitutional-harness[ray]')",
    )
    g.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster to join ('auto': the running one); default: start a local cluster",
    )
    g.add_argument(
        "--ray-actors", type=_positive(int), metavar="N", help="actors per judge (default: config)"
    )
    g.add_argument(
        "--ray-num-cpus",
        type=_positive(float),
        metavar="X",
        help="CPUs per actor (default: config)",
    )
    g.add_argument(
        "--ray-num-gpus",
        type=_positive(float),
        metavar="X",
        help="GPUs per actor (default: config)",
    )


def _ray_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The --ray-* flags that were given, as ``RaySettings`` fields (the rest: judge configs)."""
    given = {
        "address": args.ray_address,
        "actors": args.ray_actors,
        "num_cpus": args.ray_num_cpus,
        "num_gpus": args.ray_num_gpus,
    }
    return {k: v for k, v in given.items() if v is not None}


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` that is at least 0 (more than 0 for int)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0 or (kind is int and value == 0):
            raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
        return value

    return parse


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
    """Run or resume, print the scores and the accounting; 1 on judge errors, 3 on the budget."""
    from harness.engine.runner import RunOptions, resume, run
    from harness.report.console import format_accounting, summary_text
    from harness.report.render import render_report
    from harness.rundir import read_run

    common: dict[str, Any] = dict(
        use_cache=not args.no_cache,
        refresh=args.refresh,
        quiet=args.quiet,
        max_cost=args.max_cost,
        trust_suite_judges=args.trust_suite_judges,
        executor=args.executor,
        ray=_ray_settings(args),
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
    data = read_run(result.run_dir)  # read once: the summary, the accounting and the report
    print(summary_text(data))
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
        "prescreen": not args.no_prescreen,
    }
