"""The executor, cache and run store with a scripted backend (a real Backend faked at the model)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from harness.backends.base import BackendRequest
from harness.config import load_constitution
from harness.engine.cache import JudgeCache
from harness.engine.executor import execute
from harness.engine.plan import plan
from harness.engine.progress import Progress
from harness.errors import JudgeError, TransientJudgeError
from harness.records import Verdict
from harness.rundir import RunWriter, latest_status, read_jsonl_tolerant
from harness.suite_stream import load_suite
from tests.helpers import ScriptedBackend, bound, write_tiny_suite


def setup(tmp_path: Path, backend: ScriptedBackend, **config: object):
    suite = load_suite(write_tiny_suite(tmp_path))
    constitution, _ = load_constitution("default")
    judge = bound(backend, **config)
    items = plan(suite.cases, constitution, [judge])
    return items, constitution, judge


def run_items(items, constitution, judge, cache=None, refresh=False) -> list[Verdict]:
    out: list[Verdict] = []
    progress = Progress({judge.config.id: len(items)}, quiet=True)
    asyncio.run(execute(items, [judge], constitution, cache, out.extend, progress, refresh=refresh))
    return out


def test_every_item_gets_one_verdict_with_scores(tmp_path: Path) -> None:
    items, constitution, judge = setup(tmp_path, ScriptedBackend(lambda r, n: "4"))
    verdicts = run_items(items, constitution, judge)
    assert len(items) == 2 * 2 * len(constitution.principles)
    assert sorted(v.item_id for v in verdicts) == sorted(i.item_id for i in items)
    assert {v.score for v in verdicts} == {4.0} and all(v.normalized == 0.75 for v in verdicts)


def test_item_hash_ignores_volatile_settings_but_not_prompt(tmp_path: Path) -> None:
    a, _, _ = setup(tmp_path, ScriptedBackend(lambda r, n: "4"), max_concurrency=3, retries=9)
    b, _, _ = setup(tmp_path, ScriptedBackend(lambda r, n: "4"), max_concurrency=50)
    assert [i.cache_key for i in a] == [i.cache_key for i in b]
    assert len({i.cache_key for i in a}) == len(a)


def test_transient_errors_are_retried_then_recorded(tmp_path: Path) -> None:
    seen: set[str] = set()

    def flaky(req: BackendRequest, n: int) -> str:
        key = req.model_dump_json()
        if key not in seen:  # every request fails once, then succeeds
            seen.add(key)
            raise TransientJudgeError("server error", cause="5xx", retry_after=0)
        return "3"

    items, constitution, judge = setup(tmp_path, ScriptedBackend(flaky), retries=3)
    verdicts = run_items(items, constitution, judge)
    assert all(v.status == "scored" for v in verdicts)

    def down(req: BackendRequest, n: int) -> str:
        raise TransientJudgeError("server error", cause="5xx", retry_after=0)

    items, constitution, judge = setup(tmp_path, ScriptedBackend(down), retries=2)
    verdicts = run_items(items, constitution, judge)
    assert {v.status for v in verdicts} == {"error"} and all(v.attempts == 3 for v in verdicts)
    assert all("5xx" in v.reason for v in verdicts)


def test_permanent_error_is_not_retried(tmp_path: Path) -> None:
    def broken(req: BackendRequest, n: int) -> str:
        raise JudgeError("400 bad request: model not found")

    backend = ScriptedBackend(broken)
    items, constitution, judge = setup(tmp_path, backend, retries=5)
    verdicts = run_items(items, constitution, judge)
    assert backend.calls == len(items) and all(v.reason.startswith("400") for v in verdicts)


def test_unparseable_answer_is_unscored_after_bounded_retries(tmp_path: Path) -> None:
    backend = ScriptedBackend(lambda r, n: "I think it is pretty good overall.")
    items, constitution, judge = setup(tmp_path, backend, retries=4)
    verdicts = run_items(items, constitution, judge)
    assert {v.status for v in verdicts} == {"unscored"}
    assert all(v.score is None and v.passed is None and "no score" in v.reason for v in verdicts)
    assert backend.calls == 3 * len(items)  # first call + 2 retries each, never more


def test_cache_serves_reruns_and_never_stores_failures(tmp_path: Path) -> None:
    cache = JudgeCache(tmp_path / "cache.sqlite3")
    answers = iter(["5", "not a score"] * 100)
    backend = ScriptedBackend(lambda r, n: next(answers), deterministic=True)
    items, constitution, judge = setup(tmp_path, backend)
    first = run_items(items, constitution, judge, cache)
    scored = sum(v.status == "scored" for v in first)
    assert len(cache) == scored and 0 < scored < len(items)
    calls = backend.calls
    second = run_items(items, constitution, judge, cache)
    assert sum(v.cached for v in second) == scored
    assert backend.calls - calls == len(items) - scored  # only the unscored ones were asked again
    run_items(items, constitution, judge, cache, refresh=True)
    assert backend.calls - calls == 2 * len(items) - scored


def test_store_tolerates_a_torn_last_line(tmp_path: Path) -> None:
    store = RunWriter(tmp_path).open()
    v = Verdict(
        item_id="a", case_id="c", generator="g", principle="p", judge="j", status="scored", score=3
    )
    store.append([v, v.model_copy(update={"item_id": "b"})])
    store.close()
    with (tmp_path / "verdicts.jsonl").open("a") as fh:
        fh.write(json.dumps(v.model_dump())[:40])  # a crash mid-write
    store.open()  # the next writer cuts the torn line, and nothing else
    assert sorted(latest_status(tmp_path)) == ["a", "b"]
    store.append([v.model_copy(update={"item_id": "c"})])
    store.close()
    rows, _ = read_jsonl_tolerant(tmp_path / "verdicts.jsonl")
    assert [r["item_id"] for r in rows] == ["a", "b", "c"]
