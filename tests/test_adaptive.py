"""Adaptive stopping: each principle × generator stops once its confidence sequence is narrow
enough."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from harness.config import load_constitution
from harness.engine.adaptive import ROUND_CASES, AdaptiveStop
from harness.engine.runner import RunOptions, run
from harness.engine.session import JudgingSession, SessionOptions
from harness.engine.stream import Planner
from harness.records import Candidate, Case, Verdict
from tests.helpers import ScriptedBackend, bound, jsonl

CASES = [
    Case(
        id=f"c{i:03d}",
        prompt=f"q{i}",
        candidates=[Candidate(generator="g", response=f"answer {i}")],
    )
    for i in range(300)
]


def adaptive_options(tmp_path: Path, n: int) -> dict[str, object]:
    """Run options over a suite of n plain cases judged by the rules judge with --target-ci 0.05."""
    suite = tmp_path / "s.yaml"
    lines = ["id: many", "cases:"]
    for i in range(n):
        lines += [
            f"  - id: c{i}",
            f"    prompt: question {i}",
            "    candidates:",
            f"      - {{generator: g, response: 'Plain answer number {i}.'}}",
        ]
    suite.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dict(
        suite=suite,
        judges=["rules"],
        out=tmp_path / "out",
        use_cache=False,
        quiet=True,
        target_ci=0.05,
    )


def test_groups_stop_early_and_skip_the_rest() -> None:
    rng = np.random.default_rng(0)
    scores = {
        f"answer {i}": str(int(s)) for i, s in enumerate(rng.choice([4, 5], size=300, p=[0.2, 0.8]))
    }
    backend = ScriptedBackend(
        lambda r, n: next(v for k, v in scores.items() if f">\n{k}\n<" in r.messages[-1].content)
    )
    constitution, _ = load_constitution("default")
    judge = bound(backend, principles=["honesty"])
    order = {c.id: i for i, c in enumerate(CASES)}
    stop = AdaptiveStop(0.05, order)
    planner = Planner(constitution, [judge], gate=stop.want)
    out: list[Verdict] = []

    def sink(records: list) -> None:  # type: ignore[type-arg]
        out.extend(records)
        stop.update(records)

    async def go() -> None:
        opts = SessionOptions(use_cache=False, quiet=True)
        async with JudgingSession([judge], constitution, sink, {"scripted": 300}, opts) as s:
            for start in range(0, len(CASES), ROUND_CASES):
                chunk = CASES[start : start + ROUND_CASES]
                await s.judge(list(planner.items(chunk)))

    asyncio.run(go())
    assert 0 < stop.skipped < len(CASES)
    assert len(out) + stop.skipped == len(CASES)
    judged = sorted(order[v.case_id] for v in out)
    assert judged == list(range(len(out)))  # judged in the planned order, a prefix of it


def test_run_with_target_ci_resumes_without_new_calls(tmp_path: Path) -> None:
    opts = adaptive_options(tmp_path, 120)
    first = run(RunOptions(**opts))  # type: ignore[arg-type]
    assert first.skipped > 0 and first.complete
    rows = jsonl(first.run_dir / "verdicts.jsonl")
    second = run(RunOptions(**opts))  # type: ignore[arg-type]
    assert second.session is None and len(jsonl(first.run_dir / "verdicts.jsonl")) == len(rows)


def test_interrupted_adaptive_run_counts_what_was_done(tmp_path: Path) -> None:
    opts = adaptive_options(tmp_path, 200)
    full = run(RunOptions(**opts))  # type: ignore[arg-type]
    n_full = len(jsonl(full.run_dir / "verdicts.jsonl"))
    # Simulate a crash after the first 24 verdicts, then resume: the same verdict count, nothing
    # redone.
    log = full.run_dir / "verdicts.jsonl"
    log.write_text(
        "".join(line + "\n" for line in log.read_text().splitlines()[:24]), encoding="utf-8"
    )
    resumed = run(RunOptions(**opts))  # type: ignore[arg-type]
    assert len(jsonl(log)) == n_full and resumed.complete
