"""``harness report RUN``: rebuild a run's HTML report from its folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``report`` to the ``harness`` subcommands."""
    p = sub.add_parser("report", help="rebuild a run's HTML report from its folder")
    p.add_argument("run", type=Path)
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    """Write ``report.html`` and print its path."""
    from harness.report.render import render_report

    print(render_report(args.run))
    return 0
