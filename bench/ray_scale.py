"""Benchmark the Ray executor: scaling over actors, and the costs that model a cluster.

    python bench/ray_scale.py [--quick]

Ray runs a local cluster of 2 CPUs on loopback (this machine's 2 cores). Every figure is measured in
this run, through the real executor (``harness.engine.ray_executor``): actor pools, the driver's
retries, parsing into verdicts and a sink that appends each verdict as a JSON line, as the run
folder does.

1. **Scaling**: the embedded transformers judge (SmolLM2-135M, ``threads: 1``) on 1 actor, then on 2
   actors of 1 CPU each, over the same items; models are loaded before the clock starts. Speed-up =
   time on 1 actor / time on 2 (target: 1.7x). The verdicts of both must be equal.
2. **Costs per item**, for the cluster model in the README: wall and CPU seconds per item of the
   local judge (in its actor) and of an HTTP judge (the fault server, all faults off, in a separate
   process); the driver's CPU per verdict (the rules judge: its answers cost next to nothing, so
   what is left is the driver: dispatch, Ray's transport, parsing, writing); the same for the local
   executor.

Other processes share the 2 cores: the load average and the share of the machine's CPU that was busy
during each timed phase are printed with it. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.config import load_constitution, load_judge
from harness.engine.executor import Record
from harness.engine.executor import execute as execute_local
from harness.engine.plan import BoundJudge, WorkItem, plan
from harness.engine.progress import Progress
from harness.engine.ray_executor import ActorPool, RaySettings, build_backend, remote_judge
from harness.records import Candidate, Case, JudgeConfig
from harness.testing.fault_server import start_fault_server

CONSTITUTION, _ = load_constitution("default")


def cases(n_items: int) -> list[Case]:
    """Distinct cases × 2 candidates × 4 principles >= ``n_items`` items."""
    return [
        Case(
            id=f"c{i}",
            prompt=f"Question {i}: how should one approach task number {i}, and why?",
            candidates=[
                Candidate(
                    generator=f"g{k}",
                    response=f"Answer {k} to question {i}: step by step, checking each result.",
                )
                for k in range(2)
            ],
        )
        for i in range(-(-n_items // 8))
    ]


def bound(config: JudgeConfig) -> BoundJudge:
    """The judge with its backend built from the config."""
    return BoundJudge(config, build_backend(config, "bench"))


def items_for(judge: BoundJudge, n: int) -> list[WorkItem]:
    """Exactly ``n`` planned items for the judge."""
    return plan(cases(n), CONSTITUTION, [judge])[:n]


class Machine:
    """Busy share of all CPUs between ``start`` and ``stop`` (everyone's, from /proc/stat)."""

    def _read(self) -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    def start(self) -> None:
        """Start counting."""
        self.begin = self._read()

    def stop(self) -> float:
        """The busy share since ``start``."""
        busy, total = self._read()
        return round((busy - self.begin[0]) / max(1, total - self.begin[1]), 3)


def jsonl_sink(folder: Path) -> tuple[Callable[[list[Record]], None], list[Record]]:
    """A sink as the run folder's: each record appended as a JSON line and flushed; records kept."""
    fh = (folder / f"verdicts-{time.monotonic_ns()}.jsonl").open("a", encoding="utf-8")
    kept: list[Record] = []

    def sink(records: list[Record]) -> None:
        fh.write("".join(r.model_dump_json() + "\n" for r in records))
        fh.flush()
        kept.extend(records)

    return sink, kept


async def warm_pool(judge: BoundJudge, actors: int) -> ActorPool:
    """A started pool with its models loaded, so the clock times judging only."""
    pool = ActorPool(judge.config, "bench", RaySettings(actors=actors, num_cpus=1))
    await pool.start()
    await pool.warm()
    return pool


async def timed_run(
    pool: ActorPool, judge: BoundJudge, items: list[WorkItem], folder: Path
) -> dict:
    """Judge ``items`` on ``pool``: wall, CPU of the driver and actors, machine busy share."""
    sink, kept = jsonl_sink(folder)
    progress = Progress({judge.config.id: len(items)}, stream=io.StringIO())
    cpu_before = sum(await asyncio.gather(*(a.cpu_s.remote() for a in pool.actors)))
    machine = Machine()
    machine.start()
    wall, cpu = time.perf_counter(), time.process_time()
    await execute_local(items, [remote_judge(judge, pool)], CONSTITUTION, None, sink, progress)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    busy = machine.stop()
    actor_cpu = sum(await asyncio.gather(*(a.cpu_s.remote() for a in pool.actors))) - cpu_before
    return {
        "wall_s": wall,
        "driver_cpu_s": cpu,
        "actor_cpu_s": actor_cpu,
        "machine_busy": busy,
        "verdicts": {r.item_id: (r.status, getattr(r, "score", None)) for r in kept},
    }


async def timed_pool(
    judge: BoundJudge, items: list[WorkItem], actors: int, folder: Path
) -> dict[str, Any]:
    """One timed run on a fresh, warmed pool of ``actors``."""
    pool = await warm_pool(judge, actors)
    try:
        return await timed_run(pool, judge, items, folder)
    finally:
        await pool.close()


async def timed_local(judge: BoundJudge, items: list[WorkItem], folder: Path) -> dict[str, Any]:
    """The same through the local executor, in this process (the reference for driver overhead)."""
    sink, _ = jsonl_sink(folder)
    progress = Progress({judge.config.id: len(items)}, stream=io.StringIO())
    wall, cpu = time.perf_counter(), time.process_time()
    await execute_local(items, [judge], CONSTITUTION, None, sink, progress)
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def per_item(result: dict[str, Any], n: int) -> dict[str, float]:
    """Per-item figures of one timed run."""
    return {
        "cores_obtained": round(result["actor_cpu_s"] / result["wall_s"], 2),
        "wall_ms": round(1000 * result["wall_s"] / n, 3),
        "driver_cpu_ms": round(1000 * result["driver_cpu_s"] / n, 3),
        "actor_cpu_ms": round(1000 * result["actor_cpu_s"] / n, 3),
        "items_per_s": round(n / result["wall_s"], 1),
        "machine_busy": result["machine_busy"],
    }


async def scaling(n: int, rounds: int, folder: Path) -> dict[str, Any]:
    """The embedded judge on 1 actor and on 2, alternating ``rounds`` times, keeping the best."""
    config, _ = load_judge("smollm2")
    options = {**config.options, "threads": 1, "device": "cpu", "batch_size": 4}
    judge = bound(config.model_copy(update={"options": options, "max_concurrency": 2}))
    items = items_for(judge, n)
    pools = {k: await warm_pool(judge, k) for k in (1, 2)}
    best: dict[int, dict[str, Any]] = {}
    for _ in range(rounds):
        for k, pool in pools.items():
            got = await timed_run(pool, judge, items, folder)
            if k not in best or got["wall_s"] < best[k]["wall_s"]:
                best[k] = got
    for pool in pools.values():
        await pool.close()
    one, two = best[1], best[2]
    same = one["verdicts"].keys() == two["verdicts"].keys() and all(
        one["verdicts"][k][0] == two["verdicts"][k][0]
        and abs((one["verdicts"][k][1] or 0) - (two["verdicts"][k][1] or 0)) < 1e-4
        for k in one["verdicts"]
    )
    return {
        "items": n,
        "rounds": rounds,
        "one_actor": per_item(one, n),
        "two_actors": per_item(two, n),
        "speedup": round(one["wall_s"] / two["wall_s"], 2),
        "verdicts_equal": same,
    }


async def http_costs(n: int, folder: Path) -> dict[str, Any]:
    """An HTTP judge (fault server, 20 ms latency, no faults) on 2 actors of 16 calls each."""
    with start_fault_server(latency_ms=20, seed=1) as server:
        options = {"base_url": server.base_url, "model": "fault-judge", "timeout_s": 30}
        config = JudgeConfig(id="http", backend="openai", max_concurrency=16, options=options)
        judge = bound(config)
        return per_item(await timed_pool(judge, items_for(judge, n), 2, folder), n)


async def driver_costs(n: int, folder: Path) -> dict[str, Any]:
    """The rules judge: driver CPU per verdict under Ray (2 actors) and with the local executor."""
    config, _ = load_judge("rules")
    judge = bound(config)
    items = items_for(judge, n)
    remote = per_item(await timed_pool(judge, items, 2, folder), n)
    local = await timed_local(judge, items, folder)
    remote["local_executor_cpu_ms"] = round(1000 * local["cpu_s"] / n, 3)
    remote["local_executor_items_per_s"] = round(n / local["wall_s"], 1)
    return remote


def main() -> None:
    """Run the three measurements and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer items (about 1.5 minutes)")
    args = parser.parse_args()
    import ray

    load_before = os.getloadavg()
    # 3 logical CPUs: the 1-actor and 2-actor pools stay loaded side by side, and the timed phases
    # alternate; only one pool works at a time, so at most 2 busy actors share the 2 cores.
    ray.init(num_cpus=3, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    sizes = (16, 200, 1000) if args.quick else (32, 400, 2000)
    rounds = 1 if args.quick else 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scale = asyncio.run(scaling(sizes[0], rounds, folder))
        http = asyncio.run(http_costs(sizes[1], folder))
        driver = asyncio.run(driver_costs(sizes[2], folder))
    ray.shutdown()
    figures = {
        "scaling": scale,
        "http_judge": http,
        "rules_judge_driver": driver,
        "driver_ceiling_verdicts_per_s": round(1000 / max(driver["driver_cpu_ms"], 1e-9)),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    one, two = scale["one_actor"], scale["two_actors"]
    print(f"embedded judge, {scale['items']} items, 1 thread per actor:")
    print(f"  1 actor : {one['items_per_s']} items/s ({one['wall_ms']} ms/item)")
    print(f"  2 actors: {two['items_per_s']} items/s; speed-up {scale['speedup']}x (target 1.7x)")
    print(f"  verdicts equal: {scale['verdicts_equal']}")
    print(f"  cores the actors got: {one['cores_obtained']} / {two['cores_obtained']}")
    print(f"  machine busy while timed: {one['machine_busy']:.0%} / {two['machine_busy']:.0%}")
    print(f"http judge: {http['actor_cpu_ms']} ms actor CPU/item, {http['items_per_s']} items/s")
    print(
        f"driver: {driver['driver_cpu_ms']} ms CPU/verdict under Ray "
        f"(local executor: {driver['local_executor_cpu_ms']} ms); ceiling "
        f"~{figures['driver_ceiling_verdicts_per_s']} verdicts/s"
    )
    print(f"load average before/after: {figures['loadavg_before']} / {figures['loadavg_after']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
