"""Judges side by side (size, speed, agreement): hand-computed figures from a hand-built run folder,
and a real
run of the embedded student next to the rules judge whose report draws the comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.agreement import human_agreement, human_agreement_by_tag
from harness.analysis.judges import judge_profile, preference_agreement
from harness.engine.runner import RunOptions, run
from harness.records import (
    Case,
    HumanPreference,
    InputRecord,
    JudgeUsage,
    RunManifest,
    Session,
    Verdict,
)
from harness.report.render import render_report
from harness.rundir import RunWriter, read_run
from harness.student.artefact import load_student
from tests.helpers import write_tiny_suite
from tests.test_export import CONSTITUTION

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CASES = [
    Case.model_validate(
        {
            "id": f"c{i}",
            "prompt": "Q?",
            "tags": ["even" if i % 2 == 0 else "odd"],
            "human_preference": (
                HumanPreference(chosen="x", rejected="y", principle="helpful").model_dump()
                if i < 2
                else None
            ),
            "candidates": [{"generator": g, "response": f"answer {g} {i}"} for g in "xyz"],
        }
    )
    for i in range(3)
]
SCORES = {  # judge -> case -> (x, y, z) on "helpful"
    "big": {"c0": (5, 2, 3), "c1": (4, 4, 1), "c2": (1, 2, 3)},
    "small": {"c0": (4, 1, 3), "c1": (2, 3, 3), "c2": (1, 2, 2)},
}


def _verdicts() -> list[Verdict]:
    out = []
    for judge, by_case in SCORES.items():
        for case, scores in by_case.items():
            for gen, score in zip("xyz", scores, strict=True):
                out.append(
                    Verdict(
                        item_id=f"{judge}{case}{gen}",
                        case_id=case,
                        generator=gen,
                        principle="helpful",
                        judge=judge,
                        status="scored",
                        score=score,
                        latency_s=0.5 if judge == "big" else 0.1,
                        cached=(judge == "small" and case == "c2"),
                    )
                )
    return out


def _manifest() -> RunManifest:
    sessions = [
        Session(
            started="s1",
            elapsed_s=1.0,
            judges={"big": JudgeUsage(parameters=1000), "small": JudgeUsage()},
        ),
        Session(
            started="s2",
            elapsed_s=1.0,
            judges={"small": JudgeUsage(parameters=1010, trained_parameters=10)},
        ),
    ]
    return RunManifest(
        run_id="r",
        created="2026-01-01T00:00:00+00:00",
        suite=InputRecord(path="s", sha256="0"),
        constitution=InputRecord(path="c", sha256="0"),
        judges=[],
        versions={},
        seed=0,
        n_items=18,
        judge_configs=[
            {"id": "big", "backend": "transformers"},
            {"id": "small", "backend": "reward_model"},
        ],
        sessions=sessions,
        status="complete",
    )


@pytest.fixture
def hand_run(tmp_path: Path) -> Path:
    store = RunWriter(tmp_path / "r").open()
    store.initialise(_manifest(), CONSTITUTION, CASES)
    store.append(_verdicts())
    store.close()
    store.sync()
    return store.root


def test_profile_sizes_speed_and_human_agreement(hand_run: Path) -> None:
    profile = judge_profile(read_run(hand_run)).set_index("judge")
    assert (
        profile.loc["big", "parameters"] == 1000
        and profile.loc["small", "trained_parameters"] == 10
    )
    assert profile.loc["small", "parameters"] == 1010  # the latest session that knew it
    # big: 9 fresh verdicts × 0.5 s; small: c2's three were cache hits, 6 × 0.1 s
    assert profile.loc["big", "judged"] == 9 and profile.loc[
        "big", "judgments_per_s"
    ] == pytest.approx(2.0)
    assert profile.loc["small", "judged"] == 6 and profile.loc[
        "small", "judgments_per_s"
    ] == pytest.approx(10.0)
    # humans prefer x over y on c0 and c1: big is right on c0 and ties on c1 (half); small right,
    # then wrong
    assert profile.loc["big", "human_n"] == 2 and profile.loc[
        "big", "human_accuracy"
    ] == pytest.approx(0.75)
    assert profile.loc["small", "human_accuracy"] == pytest.approx(0.5)
    assert profile.loc["big", "human_ci_low"] < 0.75 < profile.loc["big", "human_ci_high"]


def test_preference_agreement_between_judges(hand_run: Path) -> None:
    agree = preference_agreement(read_run(hand_run))
    assert len(agree) == 1
    row = agree.iloc[0]
    # pairs (x,y) (x,z) (y,z) per case, big vs small. c0: x x z vs x x z, 3 alike. c1: tie x y vs y
    # z tie, none alike. c2: y z z vs y z tie, 2 alike. 5 of 9.
    assert (row["judge_a"], row["judge_b"], row["n"]) == ("big", "small", 9)
    assert row["agreement"] == pytest.approx(5 / 9) and row["ci_low"] < 5 / 9 < row["ci_high"]


def test_agreement_per_tag(hand_run: Path) -> None:
    table = human_agreement_by_tag(read_run(hand_run))
    point = table[table["protocol"] == "pointwise"].set_index(["tag", "judge"])
    assert set(table["tag"]) == {"even", "odd", "(all)"}  # c2 ("even") has no label: only c0 counts
    overall = table[table["tag"] == "(all)"].drop(columns="tag").reset_index(drop=True)
    pd.testing.assert_frame_equal(overall, human_agreement(read_run(hand_run)))
    assert point.loc[("even", "big"), "accuracy"] == 1.0 and point.loc[("even", "big"), "n"] == 1
    assert (
        point.loc[("odd", "big"), "accuracy"] == 0.5
        and point.loc[("odd", "small"), "accuracy"] == 0.0
    )


@pytest.mark.slow
def test_student_and_rules_side_by_side_in_a_real_run(tmp_path: Path) -> None:
    suite = write_tiny_suite(tmp_path)
    result = run(
        RunOptions(
            suite=suite,
            judges=["student", "rules"],
            out=tmp_path / "out",
            use_cache=False,
            quiet=True,
        )
    )
    data = read_run(result.run_dir)
    profile = judge_profile(data).set_index("judge")
    student = load_student("embedded")
    trained = sum(int(h.weight.size) for h in student.heads.values())
    assert profile.loc["student", "trained_parameters"] == trained
    assert profile.loc["student", "parameters"] > 100_000_000  # SmolLM2-135M underneath
    assert profile.loc["rules", "parameters"] == 0
    assert profile.loc["student", "judged"] > 0 and profile.loc["student", "judgments_per_s"] > 0
    html = render_report(data).read_text(encoding="utf-8")
    assert "Judges side by side" in html and "judgments per second" in html
    assert not preference_agreement(data).empty


@pytest.mark.slow
def test_student_and_prompted_judge_load_together_in_a_fresh_process(tmp_path: Path) -> None:
    """The main job's two local judges load in worker threads at the same moment; in a fresh process
    that is
    transformers' first import, which must not race ("cannot import name AutoModelForCausalLM")."""
    suite = write_tiny_suite(tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        str(suite),
        "--judge",
        "student",
        "--judge",
        "smollm2",
        "--out",
        str(tmp_path / "out"),
        "--no-cache",
        "-q",
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads(
        next((tmp_path / "out").glob("*/manifest.json")).read_text(encoding="utf-8")
    )
    assert manifest["status"] == "complete" and manifest["counts"]["error"] == 0
