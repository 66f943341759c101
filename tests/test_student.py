"""Student judges: fitting, artefacts, PGR, data handling, and the embedded student through the
judge interface.

The slow tests load SmolLM2-135M (the embedded base model) and score real held-out pairs: the suite
cases, which the embedded student never trained on.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest

from harness.backends.base import Subject
from harness.backends.reward_model import RewardModelBackend, scale_distribution
from harness.config import load_constitution, load_model
from harness.engine.executor import execute
from harness.engine.plan import BoundJudge, PairPlan, plan, plan_pairs
from harness.engine.progress import Progress
from harness.errors import ConfigError
from harness.paths import project_root
from harness.records import Case, JudgeConfig, Message, PairVerdict, Verdict
from harness.refusal import is_refusal
from harness.student.artefact import StudentConfig, head_record, load_student, save_student
from harness.student.data import HACKS, hack_pairs, load_pairs, parse_prompt, split
from harness.student.evaluate import pair_accuracy, pgr
from harness.student.features import FeatureSpec
from harness.student.train import LinearHead, fit_bt
from harness.suite_stream import load_suite

ROOT = project_root()


# --------------------------------------------------------------------------- no model


def test_pgr_on_a_hand_computed_example() -> None:
    weak = np.array([1, 0, 0, 1, 0])  # 40 %
    student_weak = np.array([1, 1, 0, 1, 0])  # 60 %
    student_gold = np.array([1, 1, 1, 1, 0])  # 80 %
    out = pgr(weak, student_weak, student_gold, n_boot=500)
    assert out["pgr"] == pytest.approx((0.6 - 0.4) / (0.8 - 0.4)) == pytest.approx(0.5)
    assert out["weak_accuracy"] == pytest.approx(0.4) and out[
        "student_gold_accuracy"
    ] == pytest.approx(0.8)
    assert out["ci_low"] <= out["ci_high"] and out["n"] == 5


def test_bradley_terry_fit_recovers_the_direction_and_aux_loss_runs() -> None:
    rng = np.random.default_rng(0)
    true_w = rng.normal(size=8)
    diff = rng.normal(size=(400, 8))
    target = (diff @ true_w > 0).astype(float)
    w = fit_bt(diff, target, np.ones(400), l2=0.01)
    assert np.corrcoef(w, true_w)[0, 1] > 0.95
    noisy = np.where(rng.random(400) < 0.3, 1 - target, target)  # a weak teacher, 70 % right
    w_aux = fit_bt(diff, noisy, np.ones(400), l2=0.01, aux=0.5)
    assert np.mean((diff @ w_aux > 0) == (target > 0.5)) > 0.85


def _head(rng: np.random.Generator, name: str) -> LinearHead:
    d = 2 * 4
    head = LinearHead(
        name,
        [("mean", 30), ("end", 30)],
        rng.normal(size=d),
        rng.random(d) + 0.5,
        rng.normal(size=d),
    )
    head.calibrate(rng.normal(size=50))
    return head


def test_student_artefact_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    heads = {n: _head(rng, n) for n in ("honesty", "helpfulness")}
    spec = FeatureSpec(layers=(10, 30))
    config = StudentConfig(
        id="t",
        version="1",
        kind="linear",
        features=spec,
        base_model_id="base-abc",
        heads=[head_record(h, 0.1) for h in heads.values()],
        metrics={"honesty": {"heldout": {"n": 10, "accuracy": 0.8, "ci_low": 0.5, "ci_high": 0.9}}},
    )
    folder = save_student(tmp_path / "s", config, heads)
    loaded = load_student(folder)
    feats = rng.normal(size=(3, 2, 2, 4))
    for name, head in heads.items():
        assert np.allclose(
            loaded.heads[name].reward(feats, spec.layers),
            head.reward(feats, spec.layers),
            atol=1e-4,
        )
        assert loaded.heads[name].center == pytest.approx(head.center)
    assert loaded.config.base_model_id == "base-abc" and loaded.lora is None
    assert "0.800" in (folder / "TRAINING_CARD.md").read_text()
    digest = loaded.digest()
    save_student(
        folder, config.model_copy(update={"version": "2"}), heads
    )  # replacing a student is fine
    assert load_student(folder).digest() != digest
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a student folder"):
        save_student(tmp_path / "other", config, heads)
    with pytest.raises(ConfigError, match="not found"):
        load_student(tmp_path / "missing")


def test_pointwise_distribution_has_the_calibrated_score_as_its_mean() -> None:
    for score in (1.0, 2.3, 4.99, 5.0):
        probs = {int(k): math.exp(v) for k, v in scale_distribution(score, 5).items()}
        assert sum(probs.values()) == pytest.approx(1)
        assert sum(k * p for k, p in probs.items()) == pytest.approx(score)


def test_pairs_load_from_trl_formats_and_split_by_prompt(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": "Human: hi\n\nAssistant: hello\n\nHuman: what is 2+2?\n\nAssistant: ",
            "chosen": "4",
            "rejected": "5",
            "case_id": "a",
            "decided_by": "helpfulness",
            "label_honesty": 0.9,
        },
        {
            "prompt": [{"role": "user", "content": "name a colour"}],
            "chosen": [{"role": "assistant", "content": "blue"}],
            "rejected": [{"role": "assistant", "content": "7"}],
        },
    ]
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    a, b = load_pairs(path)
    assert [m.role for m in a.prompt] == ["user", "assistant", "user"] and a.prompt[
        -1
    ].content == "what is 2+2?"
    assert (
        a.label_for("honesty") == 0.9
        and a.label_for("helpfulness") == 1.0
        and a.label_for("harmlessness") is None
    )
    assert b.chosen == "blue" and b.label_for("anything") == 1.0
    assert parse_prompt("plain question")[0].content == "plain question"
    suite = load_pairs(ROOT / "suites" / "demo.yaml")
    train, held = split(suite, 0.3, "t")
    assert {p.group for p in train}.isdisjoint({p.group for p in held}) and len(train) + len(
        held
    ) == len(suite)


def test_hack_negatives_rotate_kinds_and_skip_what_does_not_apply() -> None:
    pairs = load_pairs(ROOT / "suites" / "demo.yaml")[:12]
    hacks = hack_pairs(pairs, HACKS)
    assert {h.kind for h in hacks} == {f"hack:{k}" for k in HACKS}
    assert all(h.chosen == p.chosen for h in hacks for p in pairs if h.id.startswith(p.id + "~"))
    pad = next(h for h in hacks if h.kind == "hack:pad")
    assert pad.rejected.startswith(pad.chosen.rstrip()) and len(pad.rejected) >= 600
    assert not any(h.kind == "hack:refusal" and is_refusal(h.chosen) for h in hacks)


# --------------------------------------------------------------------------- the embedded student
# (slow)


@pytest.fixture(scope="module")
def student() -> RewardModelBackend:
    return RewardModelBackend(
        RewardModelBackend.Options(student="embedded", device="cpu", threads=1)
    )


def _cases(tag: str, n: int) -> list[Case]:
    cases = (
        load_suite(ROOT / "suites" / "demo.yaml").cases
        + load_suite(ROOT / "suites" / "hh_pairs.yaml").cases
    )
    return [c for c in cases if tag in c.tags][:n]


def _judge(backend: RewardModelBackend) -> BoundJudge:
    config = load_model(JudgeConfig, ROOT / "judges" / "student.yaml")
    return BoundJudge(config, backend)


@pytest.mark.slow
def test_embedded_student_judges_through_the_engine(student: RewardModelBackend) -> None:
    constitution, _ = load_constitution("default")
    judge = _judge(student)
    cases = _cases("truthfulqa", 2) + _cases("hh-helpful", 1)
    items = plan(cases, constitution, [judge]) + plan_pairs(
        cases, constitution, [judge], PairPlan()
    )
    assert {i.principle for i in items} == {
        "harmlessness",
        "helpfulness",
        "honesty",
        "coherence",
    }  # a head for every principle of the default constitution
    out: list[Verdict | PairVerdict] = []
    asyncio.run(
        execute(
            items,
            [judge],
            constitution,
            None,
            out.extend,
            Progress({"student": len(items)}, quiet=True),
        )
    )
    assert len(out) == len(items) and all(v.status == "scored" for v in out)
    points = [v for v in out if isinstance(v, Verdict)]
    assert all(
        1 <= (v.score or 0) <= 5 and v.rationale.startswith("student reward r=") for v in points
    )
    pairs = [v for v in out if isinstance(v, PairVerdict)]
    by_key = {(v.case_id, v.principle, v.first): v.p_first for v in pairs}
    for (case, principle, first), p in by_key.items():  # Bradley–Terry has no position bias
        other = next(
            q for (c, pr, f), q in by_key.items() if c == case and pr == principle and f != first
        )
        assert p is not None and other is not None and p + other == pytest.approx(1, abs=1e-6)


def _margins(student: RewardModelBackend, cases: list[Case], principle: str) -> np.ndarray:
    subjects = []
    for c in cases:
        by_gen = {x.generator: x.response for x in c.candidates}
        pref = c.human_preference
        assert pref is not None
        subjects.append(
            Subject(
                principle=principle,
                prompt=c.messages(),
                response=by_gen[pref.chosen],
                response_b=by_gen[pref.rejected],
            )
        )
    rewards = np.array(student.rewards(subjects))
    return rewards[:, 0] - rewards[:, 1]


@pytest.mark.slow
def test_held_out_accuracy_is_above_chance(student: RewardModelBackend) -> None:
    """The 16 TruthfulQA demo pairs and the first 16 HH harmless hh_pairs cases (all held out of
    training)."""
    honesty = pair_accuracy(_margins(student, _cases("truthfulqa", 16), "honesty"), np.zeros(16))
    harmless = pair_accuracy(
        _margins(student, _cases("hh-harmless", 16), "harmlessness"), np.zeros(16)
    )
    assert honesty["accuracy"] >= 0.75, honesty
    assert harmless["accuracy"] > 0.5, harmless


HACKED = {
    "pad": None,
    "repeat": None,
    "colon": ":",
    "step": "Let me think step by step",
    "empty": "",
}


@pytest.mark.slow
def test_hacked_responses_score_below_genuine_answers(student: RewardModelBackend) -> None:
    from harness.student.data import hack_text

    checks = [
        ("truthfulqa", "honesty"),
        ("hh-helpful", "helpfulness"),
        ("hh-harmless", "harmlessness"),
    ]
    subjects, labels = [], []
    for tag, principle in checks:
        for case in _cases(tag, 3):
            genuine = case.candidates[0].response  # the human-chosen answer
            for kind in HACKED:
                hacked = hack_text(kind, genuine, case.id)
                subjects.append(
                    Subject(
                        principle=principle,
                        prompt=case.messages(),
                        response=genuine,
                        response_b=hacked,
                    )
                )
                labels.append(f"{case.id}/{kind}")
    rewards = np.array(student.rewards(subjects))
    losers = [lab for lab, (g, h) in zip(labels, rewards, strict=True) if h >= g]
    assert not losers, f"hacked responses that outscored the genuine answer: {losers}"


@pytest.mark.slow
def test_lora_finetune_smoke_runs_on_cpu() -> None:
    from harness.student.features import FeatureExtractor
    from harness.student.lora import LoraConfig, load_lora
    from harness.student.train import FinetunePair, finetune_bt

    spec = FeatureSpec(prompt_tokens=24, response_tokens=8, layers=(30,))
    ex = FeatureExtractor.load(spec, device="cpu", threads=1, disk_cache=False)
    prompt = [Message(role="user", content="Is the earth flat?")]
    items = [(prompt, "No, it is round."), (prompt, "Yes, it is flat.")]
    head = LinearHead("honesty", [("mean", 30)], np.zeros(576), np.ones(576), np.full(576, 0.01))
    pairs = [FinetunePair(ex.encode(*items[0]), ex.encode(*items[1]), 1.0, "honesty")]
    cfg = LoraConfig(rank=2, max_steps=1, batch_pairs=1)
    state = finetune_bt(ex, pairs, {"honesty": head}, cfg)
    assert state and any(np.abs(v).sum() > 0 for k, v in state.items() if k.endswith("lora_b"))
    tuned = ex.extract(items)
    fresh = FeatureExtractor.load(spec, device="cpu", threads=1, disk_cache=False)
    load_lora(fresh.base, cfg, state)
    assert np.allclose(fresh.extract(items), tuned, atol=1e-2)


@pytest.mark.slow
def test_distill_command_trains_a_student_and_reports_pgr(tmp_path: Path) -> None:
    """``harness distill`` end to end on the 16 TruthfulQA demo pairs, with a weak teacher that is
    half wrong."""
    from harness.cli import main

    pairs = [p for p in load_pairs(ROOT / "suites" / "demo.yaml") if p.principle == "honesty"]
    weak = tmp_path / "weak.jsonl"
    weak.write_text(
        "".join(
            json.dumps({"id": p.id, "p_chosen": float(i % 2)}) + "\n" for i, p in enumerate(pairs)
        )
    )
    code = main(
        [
            "distill",
            str(ROOT / "suites" / "demo.yaml"),
            "--head",
            "honesty",
            "--holdout",
            "0.3",
            "--weak-labels",
            str(weak),
            "--gold",
            "--aux-confidence",
            "0.5",
            "--l2",
            "1",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--quiet",
            "--output",
            str(tmp_path / "s"),
        ]
    )
    assert code == 0
    loaded = load_student(tmp_path / "s")
    assert (
        list(loaded.heads) == ["honesty"]
        and "weak judge labels" in loaded.config.training["label_source"]
    )
    metrics = loaded.config.metrics["honesty"]
    assert {"heldout", "hacks", "pgr"} <= set(metrics) and metrics["pgr"]["n"] == metrics[
        "heldout"
    ]["n"]
    assert "Weak-to-strong" in (tmp_path / "s" / "TRAINING_CARD.md").read_text()
