"""The report's charts: axes that span the data, and a few large convergence charts, not one per
series."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from harness.records import Candidate, Case, InputRecord, RunManifest, Verdict
from harness.report.charts import line_chart
from harness.report.sections import CONVERGENCE_CHARTS, sections
from harness.rundir import RunWriter, read_run
from tests.test_report import CONSTITUTION

GENERATORS = ["steady", "also-steady", "noisy"]


def _x_labels(svg: str) -> list[str]:
    """The two end labels under the x axis (the first two <text> elements of the axes)."""
    axes = svg[svg.index("<line") :]
    return re.findall(r"<text[^>]*>([^<]*)</text>", axes)[:2]


def _path_xs(svg: str) -> list[float]:
    line = re.search(r'<path d="(M[^"]*)" fill="none"', svg)
    assert line is not None
    return [float(x) for x in re.findall(r"[ML]([\d.]+),", line.group(1))]


def test_line_chart_x_axis_runs_from_the_first_to_the_last_verdict() -> None:
    n = np.arange(1, 57)
    svg = str(line_chart(n, n / 56, n / 60, n / 50, xlabel="n", ylabel="y", title="t", width=400))
    assert _x_labels(svg) == ["1", "56"]
    xs = _path_xs(svg)
    assert xs[0] == 34.0 and xs[-1] == 400 - 8  # the plot's left and right edges, no margin


def _run(root: Path, cases: int) -> Path:
    """One judge, two principles, three generators; ``noisy`` alternates between the scale's
    ends."""
    case_list = [
        Case(
            id=f"c{i}",
            prompt=f"question {i}",
            candidates=[Candidate(generator=g, response=f"{g} {i}") for g in GENERATORS],
        )
        for i in range(cases)
    ]
    manifest = RunManifest(
        run_id="charts",
        created="2025-01-01T00:00:00Z",
        suite=InputRecord(path="suites/s.yaml", sha256="0" * 64),
        constitution=InputRecord(path="constitutions/c.yaml", sha256="1" * 64),
        judges=[InputRecord(path="judges/j.yaml", sha256="2" * 64)],
        judge_configs=[{"id": "j", "backend": "rules", "options": {}}],
        versions={},
        seed=0,
        n_items=cases * 6,
        status="complete",
    )
    store = RunWriter(root).open()
    store.initialise(manifest, CONSTITUTION, case_list)
    store.append(
        [
            _verdict(c.id, g, p.id, p.scale_max, i)
            for i, c in enumerate(case_list)
            for g in GENERATORS
            for p in CONSTITUTION.principles
        ]
    )
    store.close()
    store.sync()
    return root


def _verdict(case: str, gen: str, principle: str, top: int, i: int) -> Verdict:
    score = float(top if gen != "noisy" or i % 2 else 1)
    return Verdict(
        item_id=f"{case}|{gen}|{principle}|j",
        case_id=case,
        generator=gen,
        principle=principle,
        judge="j",
        status="scored",
        score=score,
        normalized=(score - 1) / (top - 1),
        passed=score >= 2,
    )


def test_convergence_draws_only_the_least_settled_series(tmp_path: Path) -> None:
    run = read_run(_run(tmp_path, cases=30))
    section = next(s for s in sections(run) if s.id == "convergence")
    assert len(section.rows) == 6 and len(section.figures) == CONVERGENCE_CHARTS
    captions = [caption for caption, _ in section.figures]
    # the two noisy series have the widest intervals, so they come first
    assert set(captions[:2]) == {"j · honesty · noisy", "j · harmlessness · noisy"}
    for _, svg in section.figures:
        assert _x_labels(str(svg)) == ["1", "30"]
