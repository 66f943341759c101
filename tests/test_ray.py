"""``harness run --executor ray`` and the Ray Data entry point, on a real two-node Ray cluster.

The cluster is a head and a second node, each a ``ray start`` process on loopback with 2 CPUs,
shared by the tests of this file (starting one takes ~25 s on 2 cores). Verdicts must equal the
local executor's on the same items, for the rules judge, the fault-injecting HTTP server and the
embedded model; killing an actor's process mid-run must lose and duplicate nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.cli import EXIT_BUDGET, main
from harness.testing.fault_server import RunningServer, start_fault_server
from tests.helpers import TINY_SUITE, write_tiny_suite
from tests.test_engine_faults import manifest, rows, run_dir, write_judge, write_suite

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

TRANSIENT = {"rate_429": 0.05, "rate_500": 0.05, "rate_drop": 0.03}  # retried until answered


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    from harness.testing.ray_cluster import local_cluster

    with local_cluster(nodes=2, cpus_per_node=2) as address:
        yield address


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with start_fault_server(latency_ms=5, retry_after_s=0.05, seed=3) as running:
        yield running


def run_cli(suite: Path, judge: str | Path, out: Path, *extra: str) -> int:
    argv = ["run", str(suite), "-j", str(judge), "--out", str(out), "--quiet", "--no-cache"]
    return main([*argv, *extra])


def ray_flags(address: str, actors: int = 2) -> list[str]:
    return ["--executor", "ray", "--ray-address", address, "--ray-actors", str(actors)]


def verdict_set(folder: Path, log: str = "verdicts.jsonl") -> set[tuple[Any, ...]]:
    """What a run decided, without timings: one tuple per row; rows must be unique per item."""
    got = [json.loads(line) for line in (folder / log).read_text(encoding="utf-8").splitlines()]
    assert len(got) == len({r["item_id"] for r in got}), "an item was written twice"
    keys = ("item_id", "status", "score", "p_first", "winner", "reason", "rationale", "raw_output")
    return {tuple(r.get(k) for k in keys) for r in got}


# --------------------------------------------------------------------------- without a cluster


def test_without_ray_the_cli_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(
        sys.modules, "ray", None
    )  # `import ray` now fails, as on a machine without it
    suite = write_tiny_suite(tmp_path)
    assert run_cli(suite, "rules", tmp_path / "out", "--executor", "ray") == 2
    err = capsys.readouterr().err
    assert "pip install 'constitutional-harness[ray]'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


# --------------------------------------------------------------------------- on the cluster


def test_rules_judge_on_ray_equals_local(cluster: str, tmp_path: Path) -> None:
    suite = write_tiny_suite(tmp_path)
    assert run_cli(suite, "rules", tmp_path / "local") == 0
    assert run_cli(suite, "rules", tmp_path / "ray", *ray_flags(cluster)) == 0
    local, remote = run_dir(tmp_path / "local"), run_dir(tmp_path / "ray")
    assert verdict_set(remote) == verdict_set(local) and len(verdict_set(local)) == 16
    assert manifest(remote).status == "complete"


def test_http_judge_with_faults_and_pairwise_on_ray_equals_local(
    cluster: str, server: RunningServer, tmp_path: Path
) -> None:
    server.configure(**TRANSIENT)
    suite = write_suite(tmp_path, cases=8, candidates=3)  # 96 pointwise, 144 pairwise items
    judge = write_judge(tmp_path, server.base_url, max_concurrency=4, retries=8)
    assert run_cli(suite, judge, tmp_path / "local", "--pairwise") == 0
    server.reset()
    assert run_cli(suite, judge, tmp_path / "ray", "--pairwise", *ray_flags(cluster)) == 0
    local, remote = run_dir(tmp_path / "local"), run_dir(tmp_path / "ray")
    assert verdict_set(remote) == verdict_set(local) and len(verdict_set(local)) == 96
    assert verdict_set(remote, "pairwise.jsonl") == verdict_set(local, "pairwise.jsonl")
    stats = server.stats()
    assert sum(stats[f] for f in ("429", "500", "drop")) > 0  # faults happened and were retried
    [session] = manifest(remote).sessions
    assert session.judges["fault"].calls == stats["requests"]  # the driver counted every call


def test_max_cost_on_ray_stops_and_a_rerun_completes_once(
    cluster: str, server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.configure(**{k: 0.0 for k in TRANSIENT})
    suite = write_suite(tmp_path, cases=10)  # 80 items
    judge = write_judge(tmp_path, server.base_url, max_concurrency=2, price_per_million_input=3.0)
    server.reset()
    capped = [*ray_flags(cluster), "--max-cost", "0.0003"]
    assert run_cli(suite, judge, tmp_path / "out", *capped) == EXIT_BUDGET
    first = rows(run_dir(tmp_path / "out"))
    assert 0 < len(first) < 80 and "items were not started" in capsys.readouterr().err
    assert run_cli(suite, judge, tmp_path / "out", *ray_flags(cluster)) == 0
    final = rows(run_dir(tmp_path / "out"))
    assert len(final) == 80 == len({r["item_id"] for r in final})
    assert server.stats()["ok"] == 80  # each item answered once over both invocations


def _named_actors() -> list[str]:
    found = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in found if a["namespace"] == "harness")


def _wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def _lines(path: Path) -> int:
    return path.read_text(encoding="utf-8").count("\n") if path.exists() else 0


@pytest.mark.slow
def test_sigkill_of_an_actor_mid_run_loses_and_duplicates_nothing(
    cluster: str, server: RunningServer, tmp_path: Path
) -> None:
    server.configure(latency_ms=120, **{k: 0.0 for k in TRANSIENT})
    suite = write_suite(tmp_path, cases=30)  # 240 items, ~8 in flight, ~4 s of judging
    judge = write_judge(tmp_path, server.base_url, max_concurrency=4)
    out = tmp_path / "ray"
    cmd = [sys.executable, "-m", "harness.cli", "run", str(suite), "-j", str(judge)]
    cmd += ["--out", str(out), "--quiet", "--no-cache", "--run-id", "r", *ray_flags(cluster)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ)
    try:
        names = _wait_for(lambda: len(_named_actors()) == 2 and _named_actors(), 120, "actors")
        log = out / "r" / "verdicts.jsonl"
        _wait_for(lambda: _lines(log) >= 30, 120, "the first verdicts")
        victim = ray.get_actor(names[0], namespace="harness")
        os.kill(ray.get(victim.pid.remote()), signal.SIGKILL)
        written_at_kill = _lines(log)
        replacement = _wait_for(lambda: set(_named_actors()) - set(names), 60, "a new actor")
        output, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output.decode(errors="replace")[-3000:]
    assert written_at_kill < 240 and replacement  # killed mid-run, and the pool replaced it
    got = rows(out / "r")
    assert len(got) == 240 == len({r["item_id"] for r in got})
    assert {r["status"] for r in got} == {"scored"}

    server.configure(latency_ms=5)
    assert run_cli(suite, judge, tmp_path / "local") == 0
    assert verdict_set(out / "r") == verdict_set(run_dir(tmp_path / "local"))


@pytest.mark.slow
def test_embedded_model_on_ray_equals_local(cluster: str, tmp_path: Path) -> None:
    suite = write_tiny_suite(tmp_path)
    assert run_cli(suite, "smollm2", tmp_path / "local") == 0
    extra = [*ray_flags(cluster), "--ray-num-cpus", "1"]
    assert run_cli(suite, "smollm2", tmp_path / "ray", *extra) == 0
    local = {r["item_id"]: r for r in rows(run_dir(tmp_path / "local"))}
    remote = {r["item_id"]: r for r in rows(run_dir(tmp_path / "ray"))}
    assert remote.keys() == local.keys() and len(local) == 16
    for key, row in local.items():
        assert remote[key]["status"] == row["status"] == "scored"
        # the same batches, on other processes: equal up to float rounding of the forward pass
        assert remote[key]["score"] == pytest.approx(row["score"], abs=1e-4)


def test_ray_data_verdicts_equal_the_cli(cluster: str, tmp_path: Path) -> None:
    import yaml

    from harness.engine.ray_data import judge_dataset

    suite = write_tiny_suite(tmp_path)
    assert run_cli(suite, "rules", tmp_path / "cli") == 0
    cli = {
        (r["case_id"], r["generator"], r["principle"]): (r["status"], r["score"], r["rationale"])
        for r in rows(run_dir(tmp_path / "cli"))
    }
    data = [
        {
            "id": c["id"],
            "prompt": c["prompt"],
            "response": k["response"],
            "generator": k["generator"],
        }
        for c in yaml.safe_load(TINY_SUITE)["cases"]
        for k in c["candidates"]
    ]
    if_rows = ray.data.from_items(data)
    out = judge_dataset(if_rows, "rules", actors=2, num_cpus=1, batch_size=2).take_all()
    got = {
        (r["id"], r["generator"], r["principle"]): (r["status"], r["score"], r["rationale"])
        for r in out
    }
    assert len(out) == len(got) == 16 and got == cli
