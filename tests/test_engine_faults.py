"""The engine against the fault-injecting server, run as a separate process over real sockets.

With a fifth of calls faulted (429 with Retry-After, 500, hangs past the client timeout, dropped
connections, malformed and truncated JSON), every item must end as a row with its reason, the
client's counts must add up with the server's, the exit code must reflect errors, concurrency must
be cut on 429 and grow back, and rerunning a finished run must make no call at all.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.backends.base import BackendRequest
from harness.cli import main
from harness.config import load_constitution, load_judge
from harness.engine.cache import JudgeCache
from harness.engine.executor import execute
from harness.engine.limits import AdaptiveLimiter
from harness.engine.plan import plan
from harness.engine.progress import Progress
from harness.engine.runner import bind_judges
from harness.records import RunManifest
from harness.suite_stream import load_suite
from harness.testing.fault_server import RunningServer, start_fault_server
from tests.helpers import ScriptedBackend, bound, write_tiny_suite

#: Client-side cause of each injected fault (the openai backend's mapping).
CAUSE = {
    "429": "429",
    "500": "5xx",
    "hang": "timeout",
    "drop": "connection",
    "malformed": "malformed",
    "truncated": "malformed",
}
TWENTY_PERCENT = {
    "rate_429": 0.04,
    "rate_500": 0.04,
    "rate_hang": 0.03,
    "rate_drop": 0.03,
    "rate_malformed": 0.03,
    "rate_truncated": 0.03,
}
NO_FAULTS = {f"rate_{f}": 0.0 for f in CAUSE}
PRINCIPLES = 4  # the default constitution's


# --------------------------------------------------------------------------- helpers (shared by
# other test files)


def write_suite(folder: Path, cases: int, candidates: int = 2, name: str = "synthetic") -> Path:
    """A suite of ``cases`` × ``candidates`` distinct responses (× 4 principles = items), default
    constitution."""
    suite = {
        "id": name,
        "constitution": "default",
        "cases": [
            {
                "id": f"c{i}",
                "prompt": f"Question number {i}: how should one do task {i}?",
                "candidates": [
                    {
                        "generator": f"g{k}",
                        "response": f"Answer {k} to question {i}: do it step by step.",
                    }
                    for k in range(candidates)
                ],
            }
            for i in range(cases)
        ],
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    return path


def write_judge(
    folder: Path, base_url: str, judge_id: str = "fault", *, timeout_s: float = 2.0, **config: Any
) -> Path:
    """An ``openai`` judge config pointing at ``base_url``; ``config`` sets JudgeConfig fields."""
    body = {
        "id": judge_id,
        "backend": "openai",
        "options": {"base_url": base_url, "model": "fault-judge", "timeout_s": timeout_s},
        **config,
    }
    path = folder / f"{judge_id}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


def harness_run(suite: Path, judge: Path, out: Path, *extra: str) -> int:
    """``harness run`` in this process (its exit code)."""
    return main(
        ["run", str(suite), "-j", str(judge), "--out", str(out), "--quiet", "--no-cache", *extra]
    )


def run_dir(out: Path) -> Path:
    [folder] = [p for p in out.iterdir() if p.is_dir()]
    return folder


def rows(folder: Path) -> list[dict[str, Any]]:
    """Every line of verdicts.jsonl (each must be whole JSON: no half-written rows)."""
    text = (folder / "verdicts.jsonl").read_text(encoding="utf-8")
    assert text.endswith("\n"), "the verdict log ends mid-line"
    return [json.loads(line) for line in text.splitlines()]


def manifest(folder: Path) -> RunManifest:
    return RunManifest.model_validate_json((folder / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with start_fault_server(latency_ms=5, hang_s=3, retry_after_s=0.05, seed=11) as running:
        yield running


@pytest.fixture
def clean(server: RunningServer) -> RunningServer:
    """The shared server with faults off and counts zeroed."""
    server.configure(latency_ms=5, retry_after_s=0.05, **NO_FAULTS)
    server.reset()
    return server


# --------------------------------------------------------------------------- tests


def test_a_fifth_faulted_every_item_accounted_for(clean: RunningServer, tmp_path: Path) -> None:
    clean.configure(**TWENTY_PERCENT)
    suite = write_suite(tmp_path, cases=15)  # 120 items
    judge = write_judge(tmp_path, clean.base_url, timeout_s=0.4, max_concurrency=16, retries=4)
    code = harness_run(suite, judge, tmp_path / "out")
    stats, folder = clean.stats(), run_dir(tmp_path / "out")
    got = rows(folder)

    assert len(got) == len({r["item_id"] for r in got}) == manifest(folder).n_items == 120
    assert all(r["status"] == "scored" or r["reason"] for r in got)  # nothing unexplained
    assert code == (1 if any(r["status"] == "error" for r in got) else 0)
    assert sum(r["attempts"] for r in got) == stats["requests"]  # every call is on some row
    assert (
        sum(r["status"] == "scored" for r in got) == stats["ok"]
    )  # one good answer per scored item

    [session] = manifest(folder).sessions
    usage = session.judges["fault"]
    assert usage.calls == stats["requests"] and usage.items == 120
    expected: Counter[str] = Counter()
    for fault, cause in CAUSE.items():
        expected[cause] += stats[fault]
    assert usage.retries == {k: v for k, v in expected.items() if v}
    assert sum(usage.retries.values()) >= 0.1 * stats["requests"]  # the faults did happen


def test_errors_set_the_exit_code_and_a_rerun_redoes_only_them(
    clean: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean.configure(rate_500=0.35)
    suite = write_suite(tmp_path, cases=20)  # 160 items
    judge = write_judge(tmp_path, clean.base_url, max_concurrency=16, retries=1)
    assert harness_run(suite, judge, tmp_path / "out") == 1
    folder = run_dir(tmp_path / "out")
    errors = [r for r in rows(folder) if r["status"] == "error"]
    assert errors and all(
        r["reason"].startswith("5xx: ") and "HTTP 500" in r["reason"] for r in errors
    )
    failed = clean.stats()["500"]
    assert f"retries {failed} (5xx: {failed})" in capsys.readouterr().out

    clean.configure(rate_500=0.0)
    before = clean.stats()["requests"]
    assert harness_run(suite, judge, tmp_path / "out") == 0
    assert clean.stats()["requests"] - before == len(
        errors
    )  # only the failed items were asked again
    latest = {r["item_id"]: r["status"] for r in rows(folder)}
    assert set(latest.values()) == {"scored"} and len(latest) == 160
    assert manifest(folder).status == "complete" and len(manifest(folder).sessions) == 2


def test_rerunning_a_finished_run_makes_zero_calls(
    clean: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = write_suite(tmp_path, cases=5)
    judge = write_judge(tmp_path, clean.base_url)
    assert harness_run(suite, judge, tmp_path / "out") == 0
    calls = clean.stats()["requests"]
    assert calls == 40
    capsys.readouterr()
    for extra in ([], ["--resume", str(run_dir(tmp_path / "out"))]):
        assert harness_run(suite, judge, tmp_path / "out", *extra) == 0
        assert "0 judge calls" in capsys.readouterr().out
    assert clean.stats()["requests"] == calls
    assert len(manifest(run_dir(tmp_path / "out")).sessions) == 1  # the no-op reruns judged nothing


def test_cache_hits_make_no_calls_and_show_in_the_summary(
    clean: RunningServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    suite = write_suite(tmp_path, cases=5)
    judge = write_judge(tmp_path, clean.base_url)
    for out in ("a", "b"):  # two run folders, one shared cache
        assert (
            main(["run", str(suite), "-j", str(judge), "--out", str(tmp_path / out), "--quiet"])
            == 0
        )
    assert clean.stats()["requests"] == 40
    out = capsys.readouterr().out
    assert "0 calls for 40 items" in out and "cache hits 40" in out
    assert manifest(run_dir(tmp_path / "b")).sessions[0].judges["fault"].cache_hits == 40


def _flip_429s_off_after(server: RunningServer, requests: int, stop: threading.Event) -> None:
    while not stop.is_set() and server.stats()["requests"] < requests:
        time.sleep(0.01)
    server.configure(rate_429=0.0)


def test_concurrency_is_cut_on_429_and_grows_back(clean: RunningServer, tmp_path: Path) -> None:
    """Through the executor itself, so the limiter's record can be read from the progress tally."""
    clean.configure(rate_429=0.5, retry_after_s=0.02, latency_ms=10)
    suite = load_suite(write_suite(tmp_path, cases=60))  # 480 items
    constitution, _ = load_constitution("default")
    [judge] = bind_judges(
        [load_judge(write_judge(tmp_path, clean.base_url, max_concurrency=16, retries=8))]
    )
    items = plan(suite.cases, constitution, [judge])
    progress = Progress({"fault": len(items)}, quiet=True)
    stop = threading.Event()
    flipper = threading.Thread(target=_flip_429s_off_after, args=(clean, 120, stop), daemon=True)
    flipper.start()
    try:
        asyncio.run(_execute(items, judge, constitution, progress))
    finally:
        stop.set()
        flipper.join()
    tally = progress.tally["fault"]
    assert tally.scored == len(items)
    assert tally.retries["429"] > 0
    assert tally.lowest <= 4  # halved more than once while 429s kept coming
    assert tally.limit == 16  # and back to the configured maximum once they stopped


async def _execute(items: list[Any], judge: Any, constitution: Any, progress: Progress) -> None:
    try:
        await execute(items, [judge], constitution, None, lambda records: None, progress)
    finally:
        await judge.backend.aclose()


# --------------------------------------------------------------------------- the pieces, without a
# server


def test_limiter_cuts_once_per_burst_then_grows_back_to_the_maximum() -> None:
    async def go() -> list[int]:
        limiter = AdaptiveLimiter(8)
        tickets = [await limiter.acquire() for _ in range(8)]
        for t in tickets:  # eight 429s from calls started together: one overload, one cut
            limiter.release(t, ok=False, throttled=True)
        seen = [limiter.limit]
        limiter.release(
            await limiter.acquire(), ok=False, throttled=True
        )  # a new call's 429 cuts again
        seen.append(limiter.limit)
        while limiter.limit < 8:
            limiter.release(await limiter.acquire(), ok=True)
        return [*seen, limiter.limit, limiter.lowest, limiter.in_flight]

    assert asyncio.run(go()) == [4, 2, 8, 2, 0]


def test_limiter_wakes_waiters_in_order_one_per_free_slot() -> None:
    async def go() -> list[int]:
        limiter, order = AdaptiveLimiter(1), []
        first = await limiter.acquire()

        async def wait(k: int) -> None:
            ticket = await limiter.acquire()
            order.append(k)
            limiter.release(ticket, ok=True)

        tasks = [asyncio.create_task(wait(k)) for k in range(5)]
        await asyncio.sleep(0)
        limiter.release(first, ok=True)
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(go()) == [0, 1, 2, 3, 4]


def test_an_answer_read_on_retry_is_the_one_cached(tmp_path: Path) -> None:
    """The first answer cannot be read, the retry's can: the cache must keep the readable one."""
    calls: Counter[str] = Counter()

    def answer(request: BackendRequest, n: int) -> str:
        calls[request.model_dump_json()] += 1
        return "4" if calls[request.model_dump_json()] > 1 else "I would rather not say."

    suite = load_suite(write_tiny_suite(tmp_path))
    constitution, _ = load_constitution("default")
    judge = bound(ScriptedBackend(answer))
    items = plan(suite.cases, constitution, [judge])
    cache = JudgeCache(tmp_path / "cache.sqlite3")
    for _ in range(2):
        got: list[Any] = []
        asyncio.run(
            execute(
                items,
                [judge],
                constitution,
                cache,
                got.extend,
                Progress({"scripted": 16}, quiet=True),
            )
        )
        assert {v.status for v in got} == {"scored"} and {v.score for v in got} == {4.0}
    assert all(v.cached and v.tokens_in == 10 for v in got)  # the second pass came from the cache
    assert sum(calls.values()) == 2 * len(items)
