"""Human ratings in suites: schema, validate, agreement statistics, the CLI and the report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from harness.analysis.agreement import human_rating_agreement, rated_candidates
from harness.analysis.ratings import case_pairs, rating_agreement
from harness.errors import ValidationFailed
from harness.file_check import validate_file
from harness.records import Candidate
from harness.student.data import load_pairs
from harness.suite_stream import load_suite

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "harness.cli"]
DISTILL = ["--holdout-tag", "split-heldout", "--l2", "1", "--threads", "1", "--device", "cpu"]
DISTILL += ["--hacks", "none", "-q", "-o"]


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def _suite(tmp_path: Path, scores: dict[str, float], principle: str = "coherence") -> Path:
    cases = []
    for k in range(6):
        cases.append(
            {
                "id": f"c{k}",
                "prompt": [
                    {"role": "user", "content": "hi there, seen any films lately?"},
                    {"role": "assistant", "content": "yes, a few."},
                    {"role": "user", "content": "which one did you like best?"},
                ],
                "candidates": [
                    {
                        "generator": g,
                        "response": "x " * (1 + i * (k + 1)),
                        "human_scores": {principle: s},
                        "n_raters": 3,
                    }
                    for i, (g, s) in enumerate(scores.items())
                ],
            }
        )
    (tmp_path / "r.cases.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cases))
    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "id": "r",
                "constitution": "default",
                "judges": ["rules"],
                "cases_file": "r.cases.jsonl",
            }
        )
    )
    return path


def test_candidates_carry_ratings_and_validate_checks_the_principle(tmp_path: Path) -> None:
    path = _suite(tmp_path, {"a": 1.0, "b": 2.5, "c": 3.0})
    assert validate_file(path) == "suite"
    cand = load_suite(path).cases[0].candidates[1]
    assert cand.human_scores == {"coherence": 2.5} and cand.n_raters == 3
    bad = _suite(tmp_path, {"a": 1.0, "b": 2.0}, principle="fluency")
    with pytest.raises(ValidationFailed) as err:
        validate_file(bad)
    assert "r.cases.jsonl:1" in str(err.value) and "'fluency'" in str(err.value)
    with pytest.raises(ValueError, match="finite"):
        Candidate(generator="a", response="b", human_scores={"coherence": math.nan})
    with pytest.raises(ValueError):
        Candidate(generator="a", response="b", n_raters=0)


def test_validate_command_names_the_file_and_exits_2(tmp_path: Path) -> None:
    bad = _suite(tmp_path, {"a": 1.0, "b": 2.0}, principle="fluency")
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "validate", str(bad)],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        "r.cases.jsonl:1" in proc.stderr and "human_scores names principle 'fluency'" in proc.stderr
    )


def test_rating_pairs_for_distillation_are_grouped_by_case(tmp_path: Path) -> None:
    pairs = load_pairs(_suite(tmp_path, {"a": 1.0, "b": 2.5, "c": 2.5}))
    assert len(pairs) == 6 * 2  # a<b and a<c per case; b and c are tied, so no pair
    assert {p.group for p in pairs} == {f"c{k}" for k in range(6)}
    assert all(p.principle == "coherence" and p.label == 1.0 for p in pairs)
    assert all(p.id.split(":")[2].endswith(">a") for p in pairs)


def test_case_pairs_count_ties_half_and_skip_equal_ratings() -> None:
    human = np.array([1.0, 2.0, 2.0, 3.0])
    score = np.array([1.0, 5.0, 1.0, 5.0])
    hits, pairs, ties = case_pairs(score, human)
    # rated pairs: (0,1) right, (0,2) tie, (0,3) right, (1,3) tie, (2,3) right; (1,2) equal ratings
    assert (pairs, ties) == (5, 2) and hits == pytest.approx(3 + 1)


def test_rating_agreement_perfect_reversed_and_constant_judges() -> None:
    rng = np.random.default_rng(1)
    rows = [
        {"case_id": f"k{k}", "human": h, "noise": rng.normal()}
        for k in range(12)
        for h in (1.0, 1.5, 2.0, 3.0)
    ]
    table = pd.DataFrame(rows)
    perfect = rating_agreement(table.assign(score=table["human"] * 2), n_boot=300)
    assert perfect["pair_accuracy"] == 1.0 and perfect["pair_ci_low"] == 1.0
    assert perfect["spearman"] == pytest.approx(1.0) and perfect["kendall"] == pytest.approx(1.0)
    assert perfect["pairs"] == 12 * 6 and perfect["cases"] == 12
    reverse = rating_agreement(table.assign(score=-table["human"]), n_boot=300)
    assert reverse["pair_accuracy"] == 0.0 and reverse["spearman"] == pytest.approx(-1.0)
    flat = rating_agreement(table.assign(score=3.0), n_boot=300)
    assert flat["pair_accuracy"] == 0.5 and flat["judge_ties"] == flat["pairs"]
    assert math.isnan(flat["spearman"]) and math.isnan(flat["kendall"])
    noisy = rating_agreement(table.assign(score=table["noise"]), n_boot=500, seed=3)
    assert noisy["pair_ci_low"] < 0.5 < noisy["pair_ci_high"]
    assert noisy["spearman_ci_low"] < 0 < noisy["spearman_ci_high"]


def test_bootstrap_resamples_cases_not_pairs() -> None:
    """Two cases with many pairs each: a pair-level CI would be narrow, a case-level one is wide."""
    human = np.arange(20, dtype=float)
    rows = [{"case_id": "good", "human": h, "score": h} for h in human]
    rows += [{"case_id": "bad", "human": h, "score": -h} for h in human]
    table = pd.DataFrame(rows)
    out = rating_agreement(table, n_boot=500)
    assert out["pair_accuracy"] == pytest.approx(0.5)
    assert out["pair_ci_low"] == 0.0 and out["pair_ci_high"] == 1.0


def test_agreement_command_reports_ratings_from_a_run_folder(tmp_path: Path) -> None:
    """A real run of the rules judge on a rated suite, then ``harness agreement`` on its folder."""
    suite = _suite(tmp_path, {"a": 1.0, "b": 2.5, "c": 3.0})
    out = tmp_path / "runs"
    run = subprocess.run(
        [
            *CLI,
            "run",
            str(suite),
            "-j",
            "rules",
            "-q",
            "--out",
            str(out),
            "--no-cache",
            "-p",
            "coherence",
        ],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert run.returncode == 0, run.stderr
    run_dir = next(out.iterdir())
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "agreement", str(run_dir)],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert "agreement with human ratings" in proc.stdout and "baseline:reply-length" in proc.stdout
    from harness.rundir import read_run

    data = read_run(run_dir)
    table = human_rating_agreement(data, n_boot=200).set_index(["judge", "principle"])
    # reply length grows with the rating in every case: the baseline orders every pair right
    assert table.loc[("baseline:reply-length", "coherence"), "pair_accuracy"] == 1.0
    assert table.loc[("rules", "coherence"), "pairs"] == 6 * 3
    assert len(rated_candidates(data.cases)) == 18 and data.case_index["rated"].all()
    assert [c.id for c in data.rated_cases()] == [f"c{k}" for k in range(6)]
    html = (run_dir / "report.html").read_text()
    assert "Agreement with human ratings" in html and "baseline:reply-length" in html


def _tagged_suite(tmp_path: Path) -> Path:
    """8 short rated dialogues, the last 3 tagged held out; the coherent reply is rated highest."""
    cases = []
    topics = ["films", "music", "football", "cooking", "travel", "books", "chess", "gardens"]
    for k, topic in enumerate(topics):
        cases.append(
            {
                "id": f"d{k}",
                "prompt": [{"role": "user", "content": f"do you like {topic}? i love {topic}."}],
                "tags": ["split-heldout" if k >= 5 else "split-train"],
                "candidates": [
                    {
                        "generator": "on",
                        "response": f"yes, {topic} are great fun, i like them too.",
                    },
                    {"generator": "mid", "response": f"{topic}? maybe. what time is it?"},
                    {"generator": "off", "response": "the the blue seven because never."},
                ],
            }
        )
        for cand, score in zip(cases[-1]["candidates"], (3.0, 2.0, 1.0), strict=True):
            cand["human_scores"] = {"coherence": score}
    (tmp_path / "t.cases.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cases))
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"id": "t", "cases_file": "t.cases.jsonl"}))
    return path


@pytest.mark.slow
def test_distill_on_ratings_holds_out_tagged_cases_and_adds_the_head(tmp_path: Path) -> None:
    """``harness distill`` on rated dialogues: tagged cases held out whole, rating metrics on the
    card; then the head is added to the embedded student in memory; its heads stay as they were."""
    suite = _tagged_suite(tmp_path)
    out = tmp_path / "coh"
    proc = subprocess.run(
        [*CLI, "distill", str(suite), "--head", "coherence", "--holdout", "0", *DISTILL, str(out)],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr
    from harness.student.artefact import add_heads, load_student

    student = load_student(out)
    metrics = student.config.metrics["coherence"]
    assert metrics["heldout"]["n"] == 3 * 3  # 3 held-out dialogues x 3 rated pairs each
    assert metrics["ratings"]["cases"] == 3 and metrics["ratings"]["pairs"] == 9
    assert "split-heldout" in student.config.training["heldout"]
    card = (out / "TRAINING_CARD.md").read_text()
    assert "Held-out human ratings" in card and "Spearman" in card
    base = load_student("embedded")
    config, heads = add_heads(base, student, {"summary": "test"})
    assert [h.name for h in config.heads] == [
        *(n for n in base.heads if n != "coherence"),
        "coherence",
    ]
    kept = [n for n in base.heads if n != "coherence"]
    assert all(np.array_equal(heads[n].weight, base.heads[n].weight) for n in kept)
    assert heads["coherence"] is student.heads["coherence"]  # the new head replaces the old one
    assert config.metrics["coherence"]["ratings"]["pairs"] == 9


def test_coherence_suites_are_split_by_context_and_rebuild_byte_for_byte() -> None:
    full = load_suite(ROOT / "suites" / "coherence.yaml").cases
    held = load_suite(ROOT / "suites" / "coherence_heldout.yaml").cases
    tagged = {c.id for c in full if "split-heldout" in c.tags}
    assert len(full) == 60 and len(held) == 30 and {c.id for c in held} == tagged
    assert all(("split-train" in c.tags) != (c.id in tagged) for c in full)
    assert all(len(c.candidates) == 6 for c in full)
    assert all(
        r.n_raters == 3 and 1 <= r.human_scores["coherence"] <= 3
        for c in full
        for r in c.candidates
    )
    held_dialogues = {json.dumps([m.content for m in c.messages()]) for c in held}
    train = [c for c in full if c.id not in tagged]
    assert not held_dialogues & {json.dumps([m.content for m in c.messages()]) for c in train}
    source = ROOT.parent / "shared" / "data"
    if not (source / "topical_chat_usr" / "topical_chat.json").is_file():
        pytest.skip("../shared/data/topical_chat_usr is not here: the rebuild is not checked")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import build_coherence_suite
    finally:
        sys.path.pop(0)
    for name, text in build_coherence_suite.build_files(source).items():
        assert (ROOT / "suites" / name).read_text(encoding="utf-8") == text, name
