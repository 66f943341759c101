"""The ``harness`` command: argument parsing only; each command group has its own module.

User mistakes (bad YAML, missing files, unset key variables) print one short message and exit 2; a
run with failed judge calls exits 1; a run stopped by ``--max-cost`` exits 3; interrupted runs say
how to resume.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from harness.cli import audit, compare, config, data, distill, export, report, run, view
from harness.cli.run import EXIT_BUDGET
from harness.console import quiet_libraries
from harness.errors import HarnessError
from harness.safetext import safe_terminal

__all__ = ["EXIT_BUDGET", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``harness`` parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="harness", description="Judge model outputs against a constitution."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (run, report, config, compare, data, export, distill, view, audit):
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``harness`` command."""
    with safe_terminal():  # names and texts from files and models may hold escape codes
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    quiet = bool(getattr(args, "quiet", False))
    if quiet or not sys.stderr.isatty():
        quiet_libraries(warnings_too=quiet)
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
