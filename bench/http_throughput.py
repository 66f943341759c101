"""Benchmark the engine over HTTP: N judge calls through the real executor and ``openai`` backend.

    python bench/http_throughput.py [--quick] [--n N] [--rounds R]

The fault-injecting test server runs as a separate process with every fault rate at 0. Each
measurement runs in a fresh child process (so its CPU time and peak RSS are its own, never the
server's):

- ``harness``: N pointwise work items (planned from a synthetic suite under the default
  constitution) through ``execute`` with the ``openai`` backend, cache off, the real verdict sink
  (``RunWriter`` appending to verdicts.jsonl) and the real progress display (redrawn into a buffer);
- ``bare``: the same N request bodies through a minimal aiohttp loop (``concurrency`` tasks, each
  json.dumps -> POST -> json.loads), the reference measured in the same run.

At 200 ms latency, with concurrency 64 and 256: calls/s as a percentage of the bound (concurrency ÷
latency), client CPU seconds per 1,000 calls and peak RSS, for both, and harness/bare ratios. At
latency 0: the client's CPU per call for both and the harness's overhead per call over the bare
loop. Also per run: the mean call latency each client saw (what this machine adds to the server's
delay, which caps what any client can reach) and the server's CPU per 1,000 calls. Harness and bare
alternate in rounds and each keeps its fastest. The last line of output is one JSON object with
every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from harness.backends.openai import OpenAIBackend
from harness.config import load_constitution
from harness.engine.executor import execute
from harness.engine.plan import BoundJudge, WorkItem, plan
from harness.engine.progress import Progress
from harness.records import Candidate, Case, JudgeConfig
from harness.rundir import RunWriter
from harness.testing.fault_server import start_fault_server

LATENCY_MS = 200
CONCURRENCIES = (64, 256)
PRINCIPLES = 4  # in the default constitution


# --------------------------------------------------------------------------- work


def synthetic_cases(n_items: int) -> list[Case]:
    """Cases × 2 candidates × 4 principles = at least ``n_items`` items, each prompt distinct."""
    n_cases = -(-n_items // (2 * PRINCIPLES))
    return [
        Case(
            id=f"c{i}",
            prompt=f"Question {i}: how should one approach task number {i}, and why?",
            candidates=[
                Candidate(
                    generator=f"g{k}",
                    response=f"Answer {k} to question {i}: step by step, "
                    "checking each result before moving on, as a careful person would.",
                )
                for k in range(2)
            ],
        )
        for i in range(n_cases)
    ]


def judge(base_url: str, concurrency: int) -> BoundJudge:
    """An ``openai`` judge at the test server."""
    options: dict[str, Any] = {"base_url": base_url, "model": "fault-judge", "timeout_s": 60}
    config = JudgeConfig(id="bench", backend="openai", max_concurrency=concurrency, options=options)
    return BoundJudge(config, OpenAIBackend(OpenAIBackend.Options(**options), judge="bench"))


def planned(base_url: str, concurrency: int, n: int) -> tuple[BoundJudge, list[WorkItem], float]:
    """The judge, exactly ``n`` items, and the CPU seconds planning took."""
    constitution, _ = load_constitution("default")
    bound = judge(base_url, concurrency)
    start = time.process_time()
    items = plan(synthetic_cases(n), constitution, [bound])[:n]
    return bound, items, time.process_time() - start


# --------------------------------------------------------------------------- the two clients


async def run_harness(bound: BoundJudge, items: list[WorkItem], folder: Path) -> int:
    """The engine as ``harness run`` drives it, minus planning; returns the number of scored items."""
    constitution, _ = load_constitution("default")
    store = RunWriter(folder).open()
    progress = Progress({"bench": len(items)}, stream=io.StringIO(), interval=1.0)
    try:
        await execute(items, [bound], constitution, None, store.append, progress)
    finally:
        store.close()
        await bound.backend.aclose()
    return progress.tally["bench"].scored


async def run_bare(
    url: str, bodies: list[dict[str, Any]], concurrency: int, latencies: list[float]
) -> int:
    """A minimal aiohttp client: ``concurrency`` tasks sharing one session; returns the answers
    read.

    Each call's latency goes to ``latencies``: above the server's own delay it is what this machine
    adds.
    """
    answered = 0
    pending = iter(bodies)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, headers={"Content-Type": "application/json"}
    ) as session:

        async def worker() -> None:
            nonlocal answered
            for body in pending:
                start = time.perf_counter()
                async with session.post(url, data=json.dumps(body).encode()) as resp:
                    answered += bool(json.loads(await resp.read())["choices"])
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answered


# --------------------------------------------------------------------------- one measurement (child
# process)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one client once; wall and CPU seconds of the calls alone, peak RSS of the whole process."""
    bound, items, plan_cpu = planned(spec["base_url"], spec["concurrency"], spec["n"])
    rss_before = _rss_mb()
    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        if spec["mode"] == "harness":
            done = asyncio.run(run_harness(bound, items, Path(tmp)))
        else:
            done = asyncio.run(
                run_bare(
                    spec["base_url"] + "/chat/completions",
                    bodies_of(bound, items),
                    spec["concurrency"],
                    latencies,
                )
            )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if spec["mode"] == "harness":  # read back after the clock stopped: what each call took
            latencies = [
                json.loads(line)["latency_s"] for line in (Path(tmp) / "verdicts.jsonl").open()
            ]
    return {
        "mode": spec["mode"],
        "n": len(items),
        "ok": done,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "plan_cpu_s": round(plan_cpu, 3),
        "rss_before_mb": rss_before,
        "peak_rss_mb": _rss_mb(),
        "latency_ms_mean": round(1000 * sum(latencies) / max(1, len(latencies)), 2),
    }


def bodies_of(bound: BoundJudge, items: list[WorkItem]) -> list[dict[str, Any]]:
    """The request bodies the harness would send (built before the bare loop's clock starts)."""
    backend = bound.backend
    assert isinstance(backend, OpenAIBackend)
    return [backend.request_body(i.request) for i in items]


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def in_child(spec: dict[str, Any]) -> dict[str, Any]:
    """``measure(spec)`` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"measurement {spec} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- figures


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def at_latency(
    base_url: str, server_pid: int, n: int, concurrency: int, latency_ms: float, rounds: int
) -> dict[str, Any]:
    """Harness and bare at one concurrency: throughput against the bound, CPU per 1,000 calls, RSS.

    The two alternate for ``rounds`` rounds, so both see the same load on a shared machine; each
    keeps its fastest round (the one least disturbed by other processes), and every round's rate is
    listed.
    """
    bound = concurrency / (latency_ms / 1000) if latency_ms else None
    out: dict[str, Any] = {"concurrency": concurrency, "bound_calls_per_s": bound}
    for _ in range(rounds):
        for mode in ("bare", "harness"):
            server_cpu = _cpu_of(server_pid)
            r = in_child({"mode": mode, "base_url": base_url, "n": n, "concurrency": concurrency})
            assert r["ok"] == r["n"] == n, f"{mode}: {r['ok']} of {n} calls answered"
            fig = client_figures(r, bound)
            fig["server_cpu_s_per_1000"] = round(1000 * (_cpu_of(server_pid) - server_cpu) / n, 3)
            rates = [*out.get(mode, {}).get("rounds_calls_per_s", []), fig["calls_per_s"]]
            if mode not in out or fig["calls_per_s"] > out[mode]["calls_per_s"]:
                out[mode] = fig
            out[mode]["rounds_calls_per_s"] = rates
    out["plan_cpu_s_per_1000"] = round(1000 * r["plan_cpu_s"] / n, 3)
    h, b = out["harness"], out["bare"]
    out["throughput_harness_over_bare"] = round(h["calls_per_s"] / b["calls_per_s"], 3)
    out["cpu_harness_over_bare"] = round(h["cpu_s_per_1000"] / b["cpu_s_per_1000"], 3)
    return out


def client_figures(r: dict[str, Any], bound: float | None) -> dict[str, Any]:
    """One child's measurement as rates, shares of the bound, CPU per call and memory."""
    n, rate = r["n"], r["n"] / r["wall_s"]
    return {
        "calls_per_s": round(rate, 1),
        "pct_of_bound": round(100 * rate / bound, 1) if bound else None,
        "cpu_s_per_1000": round(1000 * r["cpu_s"] / n, 3),
        "cpu_ms_per_call": round(r["cpu_s"] / n * 1e3, 4),
        "wall_ms_per_call": round(r["wall_s"] / n * 1e3, 4),
        "peak_rss_mb": r["peak_rss_mb"],
        "rss_before_mb": r["rss_before_mb"],
        "wall_s": r["wall_s"],
        "latency_ms_mean": r["latency_ms_mean"],
    }


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1,000 calls instead of 5,000")
    parser.add_argument("--n", type=int, help="calls per measurement")
    parser.add_argument(
        "--rounds", type=int, help="alternating rounds per figure (default 2, 1 with --quick)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    n = args.n or (1000 if args.quick else 5000)
    rounds = args.rounds or (1 if args.quick else 2)
    figures: dict[str, Any] = {
        "bench": "http_throughput",
        "n": n,
        "latency_ms": LATENCY_MS,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    with start_fault_server(latency_ms=LATENCY_MS, keep_requests=0) as server:
        for c in CONCURRENCIES:
            figures[f"c{c}"] = row = at_latency(
                server.base_url, server.process.pid, n, c, LATENCY_MS, rounds
            )
            print(
                f"latency {LATENCY_MS} ms, concurrency {c}: harness {row['harness']['calls_per_s']}/s "
                f"({row['harness']['pct_of_bound']} % of {row['bound_calls_per_s']:.0f}/s), "
                f"{row['harness']['cpu_s_per_1000']} CPU s/1000 calls, {row['harness']['peak_rss_mb']} MB; bare "
                f"{row['bare']['calls_per_s']}/s ({row['bare']['pct_of_bound']} %), "
                f"{row['bare']['cpu_s_per_1000']} CPU s/1000",
                flush=True,
            )
        server.configure(latency_ms=0)
        zero = at_latency(server.base_url, server.process.pid, n, CONCURRENCIES[0], 0, rounds)
    figures["latency0"] = zero
    figures["overhead_ms_per_call"] = round(
        zero["harness"]["cpu_ms_per_call"] - zero["bare"]["cpu_ms_per_call"], 4
    )
    print(
        f"latency 0, concurrency {CONCURRENCIES[0]}: client CPU per call harness "
        f"{zero['harness']['cpu_ms_per_call']} ms, bare {zero['bare']['cpu_ms_per_call']} ms; harness overhead "
        f"{figures['overhead_ms_per_call']} ms per call",
        flush=True,
    )
    figures["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
