"""``harness audit --judge J [--judge J2] [--suite S ...]``: a report card per judge."""

from __future__ import annotations

import argparse
from pathlib import Path


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``audit`` subcommand to the ``harness`` command's subparsers."""
    p = sub.add_parser(
        "audit",
        help="audit judges: agreement with people, biases, hack probes, calibration",
        description="Write a report card (HTML, JSON, Markdown) per judge. Without --suite, the "
        "bundled human-labelled suites are used.",
    )
    p.add_argument(
        "--judge",
        "-j",
        action="append",
        required=True,
        help="judge config or built-in (repeatable)",
    )
    p.add_argument(
        "--suite", "-s", action="append", default=[], help="suite with human labels (repeatable)"
    )
    p.add_argument("--constitution", "-c", help="constitution (default: the first suite's)")
    p.add_argument(
        "--per-source",
        type=_positive,
        default=30,
        metavar="N",
        help="labelled cases sampled per data source (default 30)",
    )
    p.add_argument(
        "--probe", action="append", default=[], help="only this probe class (repeatable)"
    )
    p.add_argument(
        "--out", type=Path, default=Path("reports/audits"), help="output folder (reports/audits)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", action="store_true", help="neither read nor write caches")
    p.add_argument("--refresh", action="store_true", help="redo the audit even if one is on record")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    """Run the audit and print where each card is, with its verdict."""
    from harness.audit import probes
    from harness.audit.run import DEFAULT_SUITES, AuditOptions, audit

    options = AuditOptions(
        judges=args.judge,
        suites=args.suite or list(DEFAULT_SUITES),
        constitution=args.constitution,
        per_source=args.per_source,
        classes=args.probe or list(probes.PROBES),
        out=args.out,
        seed=args.seed,
        use_cache=not args.no_cache,
        refresh=args.refresh,
        quiet=args.quiet,
    )
    for card, folder in audit(options):
        v = card["verdict"]
        print(f"\njudge {card['judge']['id']} (identity {card['judge']['identity']})")
        print("  trust it for: " + ("; ".join(v["trust"]) or "nothing"))
        print("  do not trust it for: " + ("; ".join(v["distrust"]) or "nothing"))
        print(f"  card: {folder / 'card.html'} (and card.json, card.md)")
    return 0
