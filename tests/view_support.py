"""Shared pieces of the viewer tests: a real server on 127.0.0.1 in a thread, hostile text."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.view.index import RunIndex
from harness.view.server import make_app, serve

# Text that would run script or break out of an element if it were ever put on the page as markup.
HOSTILE = (
    "<script>window.__pwned = 1</script></textarea></pre>"
    '<img src=x onerror="window.__pwned = 2">\x00\x07\x1b\u202e & &amp; end'
)
HOSTILE_CASE = "evil<b>1</b>"


def add_hostile_case(root: Path) -> None:
    """Append a case whose every text field, and its verdict, is hostile markup."""
    case = {
        "id": HOSTILE_CASE,
        "prompt": [{"role": "user", "content": HOSTILE}],
        "tags": ["<i>tag</i>"],
        "candidates": [{"generator": "model-a", "response": HOSTILE}],
    }
    verdict = {
        "item_id": "hostile-1", "case_id": HOSTILE_CASE, "generator": "model-a",
        "principle": "harmlessness", "judge": "rules", "status": "scored", "score": 1.0,
        "rationale": HOSTILE, "reason": HOSTILE, "raw_output": HOSTILE,
    }  # fmt: skip
    with (root / "cases.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(case) + "\n")
    with (root / "verdicts.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(verdict) + "\n")


@contextmanager
def served(roots: list[Path], interval: float = 0.2) -> Iterator[str]:
    """Serve the viewer for ``roots`` on a free port of 127.0.0.1; yields its URL."""
    indexes = [RunIndex(root) for root in roots]
    for ix in indexes:
        ix.refresh()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, object] = {}

    async def start() -> None:
        runner, url = await serve(make_app(indexes, interval=interval), "127.0.0.1", 0)
        box["runner"], box["url"] = runner, url

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30), "the viewer did not start"
    try:
        yield str(box["url"])
    finally:
        runner = box["runner"]
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)  # type: ignore[attr-defined]
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
        for ix in indexes:
            ix.close()
