"""``harness view RUN [RUN ...]``: browse run folders in a local web app.

Indexes each run folder's logs into a DuckDB file in the user cache (incrementally, so a second
start or a run still being written costs only what is new), then serves the viewer on 127.0.0.1
until interrupted. ``--port 0`` picks a free port; the URL is printed either way.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from harness.errors import RunError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``view`` subcommand to the ``harness`` command's subparsers."""
    p = sub.add_parser(
        "view",
        help="browse run folders in a local web app (search, filters, side by side)",
        description="Serve a local web app for browsing one or more run folders, including a run "
        "that is still being written.",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folder(s)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.set_defaults(func=cmd_view)


def check_run_folder(root: Path) -> None:
    """Raise RunError unless ``root`` looks like a run folder (it may still be starting)."""
    if not root.is_dir():
        raise RunError(f"{root}: not a folder (expected a run folder written by `harness run`)")
    if not any((root / name).exists() for name in ("manifest.json", "cases.jsonl")):
        raise RunError(f"{root}: not a run folder (expected manifest.json or cases.jsonl in it)")


def cmd_view(args: argparse.Namespace) -> int:
    """Index the runs, serve the viewer, and wait until interrupted."""
    if not 0 <= args.port <= 65535:
        raise RunError(f"--port: expected 0..65535, got {args.port}")
    for root in args.runs:
        check_run_folder(root)
    from harness.view.index import RunIndex

    indexes = []
    for root in args.runs:
        start = time.monotonic()
        print(f"indexing {root} ...", file=sys.stderr, flush=True)
        ix = RunIndex(root)
        lines = ix.refresh()
        took = time.monotonic() - start
        print(f"  {lines} new log line(s) in {took:.1f} s", file=sys.stderr, flush=True)
        indexes.append(ix)
    try:
        asyncio.run(_serve(indexes, args.host, args.port))
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    except OSError as exc:
        raise RunError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    finally:
        for ix in indexes:
            ix.close()
    return 0


async def _serve(indexes: list, host: str, port: int) -> None:
    from harness.view.server import make_app, serve

    runner, url = await serve(make_app(indexes, host), host, port)
    print(f"harness view: {url}  (Ctrl-C to stop)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
