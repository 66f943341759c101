"""``harness validate FILE…`` and ``harness schemas``: check config files and their JSON Schemas."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``validate`` and ``schemas`` to the ``harness`` subcommands."""
    p = sub.add_parser("validate", help="check constitutions, suites and judge configs")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("schemas", help="regenerate the JSON Schemas in harness/schemas/")
    p.add_argument("--check", action="store_true", help="only report stale schemas")
    p.set_defaults(func=cmd_schemas)


def cmd_validate(args: argparse.Namespace) -> int:
    """Print ``ok (kind)`` per valid file and the error of each invalid one; 2 if any failed."""
    from harness.errors import ConfigError
    from harness.file_check import validate_file

    failed = 0
    for path in args.files:
        try:
            print(f"{path}: ok ({validate_file(Path(path))})")
        except ConfigError as exc:  # ValidationFailed is a ConfigError
            failed += 1
            print(str(exc), file=sys.stderr)
    return 2 if failed else 0


def cmd_schemas(args: argparse.Namespace) -> int:
    """Regenerate the schemas (print their paths), or with ``--check`` list stale ones and exit 1."""
    from harness import schema_export

    if args.check:
        bad = schema_export.stale()
        for name in bad:
            print(f"stale: harness/schemas/{name}", file=sys.stderr)
        return 1 if bad else 0
    for path in schema_export.write():
        print(path)
    return 0
