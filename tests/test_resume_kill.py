"""Crash-safe resume: ``harness run`` killed with SIGKILL at random moments, then run again to
completion.

The final verdicts must equal an uninterrupted run's, with no duplicated row, and the calls paid
twice (server requests minus items) can be no more than were in flight at the kills: max_concurrency
per kill.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.engine.cache import JudgeCache
from harness.testing.fault_server import RunningServer, start_fault_server
from tests.test_engine_faults import manifest, rows, run_dir, write_judge, write_suite

CONCURRENCY = 8
KILLS = 3
ITEMS = (
    30 * 2 * 4
)  # write_suite(cases=30): 240 items, about 3 s of calls at 100 ms and concurrency 8


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with start_fault_server(latency_ms=100, seed=5) as running:
        yield running


def command(suite: Path, judge: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        str(suite),
        "-j",
        str(judge),
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def kill_after(cmd: list[str], env: dict[str, str], server: RunningServer, calls: int) -> int:
    """Start the run, SIGKILL it once the server has seen ``calls`` more requests; returns requests
    then."""
    start = server.stats()["requests"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while server.stats()["requests"] - start < calls and proc.poll() is None:
            time.sleep(0.005)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    return server.stats()["requests"] - start


def complete(cmd: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def scores(out: Path) -> dict[str, float]:
    """item_id -> score of the latest row per item."""
    return {r["item_id"]: r["score"] for r in rows(run_dir(out))}


def crash_and_resume(
    server: RunningServer, tmp_path: Path, env: dict[str, str], *extra: str
) -> list[str]:
    """Kill a run KILLS times at random points, finish it, check it; returns the command."""
    suite = write_suite(tmp_path, cases=30)
    judge = write_judge(tmp_path, server.base_url, max_concurrency=CONCURRENCY, timeout_s=10)
    complete(command(suite, judge, tmp_path / "baseline", "--no-cache"), env)
    server.reset()

    rng = random.Random(os.environ.get("HARNESS_KILL_SEED", "17"))
    cmd = command(suite, judge, tmp_path / "killed", *extra)
    for k in range(KILLS):
        before = len(rows(run_dir(tmp_path / "killed"))) if (tmp_path / "killed").exists() else 0
        # More than CONCURRENCY requests means a worker finished (and wrote) an item and started
        # another.
        seen = kill_after(cmd, env, server, rng.randint(CONCURRENCY + 1, ITEMS // (KILLS + 1)))
        saved = len(rows(run_dir(tmp_path / "killed")))
        print(f"kill {k + 1}: {seen} requests reached the server, {saved - before} rows saved")
        assert saved > before, f"kill {k + 1} saved nothing"
    complete(cmd, env)

    got = rows(run_dir(tmp_path / "killed"))
    assert scores(tmp_path / "killed") == scores(tmp_path / "baseline")
    assert len(got) == ITEMS and not [
        i for i, n in Counter(r["item_id"] for r in got).items() if n > 1
    ]
    assert manifest(run_dir(tmp_path / "killed")).status == "complete"
    paid_twice = server.stats()["requests"] - ITEMS
    print(f"paid twice: {paid_twice} calls (bound: {CONCURRENCY} in flight x {KILLS} kills)")
    assert 0 <= paid_twice <= CONCURRENCY * KILLS
    return cmd


@pytest.mark.slow
def test_kill_nine_then_resume_without_cache(server: RunningServer, tmp_path: Path) -> None:
    crash_and_resume(
        server, tmp_path, dict(os.environ, HARNESS_CACHE_DIR=str(tmp_path / "unused")), "--no-cache"
    )
    assert not (tmp_path / "unused").exists()


@pytest.mark.slow
def test_kill_nine_then_resume_with_cache(server: RunningServer, tmp_path: Path) -> None:
    env = dict(os.environ, HARNESS_CACHE_DIR=str(tmp_path / "cache"))
    cmd = crash_and_resume(server, tmp_path, env)
    cache = JudgeCache(tmp_path / "cache" / "judge-cache.sqlite3")
    cached = len(cache)
    cache.close()
    # Answers still buffered at a kill (a fraction of a second's worth) may be missing; the run's
    # own log holds them, so the resume above did not pay for them again.
    assert cached >= ITEMS // 2

    # a new run folder over the same items: the cache answers, only what it lacks is paid
    server.reset()
    cmd[cmd.index("--out") + 1] = str(tmp_path / "again")
    complete(cmd, env)
    assert server.stats()["requests"] == ITEMS - cached
    assert scores(tmp_path / "again") == scores(tmp_path / "killed")
