"""Cache faults never cost a paid verdict: a locked, corrupt or unreadable cache is one warning.

Real SQLite files throughout: a second connection holds the write lock, garbage bytes stand in for a
corrupt file, a row that no longer parses stands in for a damaged entry.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.config import load_constitution
from harness.engine.cache import JudgeCache
from harness.engine.executor import execute
from harness.engine.plan import plan
from harness.engine.progress import Progress
from harness.suite_stream import load_suite
from tests.helpers import ScriptedBackend, bound, jsonl, write_tiny_suite


def _judge_all(tmp_path: Path, cache: JudgeCache) -> tuple[list[Any], ScriptedBackend]:
    suite = load_suite(write_tiny_suite(tmp_path))
    constitution, _ = load_constitution("default")
    backend = ScriptedBackend(lambda r, n: "4")
    judge = bound(backend)
    items = plan(suite.cases, constitution, [judge])
    got: list[Any] = []
    progress = Progress({"scripted": len(items)}, quiet=True)
    asyncio.run(execute(items, [judge], constitution, cache, got.extend, progress))
    return got, backend


def test_a_locked_cache_loses_no_paid_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another process holds the write lock: every verdict still reaches the sink; one warning."""
    path = tmp_path / "cache.sqlite3"
    cache = JudgeCache(path, flush_every=1, timeout_s=0.05)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        got, backend = _judge_all(tmp_path, cache)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert got and {v.status for v in got} == {"scored"} and backend.calls == len(got)
    err = capsys.readouterr().err
    assert err.count("warning: judge cache") == 1 and "locked" in err
    assert not cache.working and cache.get_many([v.item_id for v in got]) == {}
    cache.close()


def test_a_corrupt_cache_file_is_a_warning_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    garbage = b"this is not an sqlite database\x00" * 200
    (cache_dir / "judge-cache.sqlite3").write_bytes(garbage)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(cache_dir))
    suite = write_tiny_suite(tmp_path)
    code = main(["run", str(suite), "-j", "rules", "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "warning: judge cache" in err and "Traceback" not in err
    [folder] = list((tmp_path / "out").iterdir())
    assert jsonl(folder / "verdicts.jsonl")
    assert (cache_dir / "judge-cache.sqlite3").read_bytes() == garbage  # left alone, not "repaired"


def test_a_damaged_row_is_a_miss_and_is_judged_again(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    first, _ = _judge_all(tmp_path, JudgeCache(path))
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE responses SET response = '{not json'")
    db.close()
    again, backend = _judge_all(tmp_path, JudgeCache(path))
    assert backend.calls == len(first) and not any(v.cached for v in again)


def test_the_verdict_is_saved_before_the_cache_is_written(tmp_path: Path) -> None:
    """A cache write that dies outright (not an sqlite fault) finds the verdict already saved."""

    class Exploding(JudgeCache):
        def put_many(self, entries: dict[str, Any]) -> None:
            raise KeyboardInterrupt  # e.g. Ctrl-C while the cache commits

    saved: list[Any] = []
    suite = load_suite(write_tiny_suite(tmp_path))
    constitution, _ = load_constitution("default")
    judge = bound(ScriptedBackend(lambda r, n: "4"))
    items = plan(suite.cases, constitution, [judge])[:1]
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(
            execute(
                items,
                [judge],
                constitution,
                Exploding(tmp_path / "c.sqlite3"),
                saved.extend,
                Progress({"scripted": 1}, quiet=True),
            )
        )
    assert [v.item_id for v in saved] == [items[0].item_id]
