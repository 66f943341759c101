"""Pairwise judging end to end with scripted judges: order combination, position bias, rankings,
agreement."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from harness.analysis.agreement import human_agreement
from harness.analysis.pairwise import combine_orders, position_bias, prob_better, rankings
from harness.backends.base import BackendRequest
from harness.config import load_constitution
from harness.engine.executor import execute
from harness.engine.plan import PairPlan, case_pairs, plan_pairs
from harness.engine.progress import Progress
from harness.records import Candidate, Case, HumanPreference, RunManifest
from harness.rundir import RunWriter, read_run
from harness.suite_stream import load_suite
from harness.untrusted import fenced_texts
from tests.helpers import ScriptedBackend, bound

CASES = [
    Case(
        id=f"c{i}",
        prompt=f"question {i}",
        candidates=[
            Candidate(generator="alpha", response=f"good answer {i}"),
            Candidate(generator="beta", response=f"bad answer {i}"),
            Candidate(generator="gamma", response=f"so-so answer {i}"),
        ],
        human_preference=HumanPreference(chosen="alpha", rejected="beta", principle="helpfulness"),
    )
    for i in range(12)
]
RANK = {"good": 3, "so-so": 2, "bad": 1}


def oracle(req: BackendRequest, n: int) -> str:
    """Prefers the response whose text ranks higher; a tie when equal."""
    text = req.messages[-1].content
    shown = dict(fenced_texts(text))
    a, b = shown["response_a"], shown["response_b"]
    ra, rb = (max(v for k, v in RANK.items() if k in s) for s in (a, b))
    return "A" if ra > rb else "B" if rb > ra else "C"


BOTH_ORDERS = PairPlan()


def judged_run(tmp_path: Path, answer, how: PairPlan = BOTH_ORDERS):  # type: ignore[no-untyped-def]
    constitution, _ = load_constitution("default")
    judge = bound(ScriptedBackend(answer), judge_id="j")
    items = plan_pairs(CASES, constitution, [judge], how)
    store = RunWriter(tmp_path / "run").open()
    rec = {"path": "x", "sha256": "0"}
    manifest = RunManifest.model_validate(
        {
            "run_id": "r",
            "created": "now",
            "suite": rec,
            "constitution": rec,
            "judges": [rec],
            "judge_configs": [],
            "versions": {},
            "seed": 0,
            "n_items": len(items),
        }
    )
    store.initialise(manifest, constitution, CASES)
    progress = Progress({"j": len(items)}, quiet=True)
    asyncio.run(execute(items, [judge], constitution, None, store.append, progress))
    store.close()
    return items, read_run(store.root)


def test_both_orders_planned_for_every_pair(tmp_path: Path) -> None:
    items, run = judged_run(tmp_path, oracle)
    assert len(items) == 12 * 3 * 2 * 4  # cases × pairs × orders × principles
    assert len(run.pairs) == len(items) and set(run.pairs["status"]) == {"scored"}


def test_oracle_is_consistent_and_unbiased(tmp_path: Path) -> None:
    _, run = judged_run(tmp_path, oracle)
    combined = combine_orders(run.pairs)
    assert combined["consistent"].all() and (combined["n_orders"] == 2).all()
    bias = position_bias(run.pairs).iloc[0]
    assert bias["consistency"] == 1.0 and bias["p_prefer_first"] == pytest.approx(0.5)
    ranks = rankings(combined, run.constitution)
    top = ranks[(ranks["principle"] == "overall") & (ranks["rank"] == 1)]
    assert set(top["generator"]) == {"alpha"} and len(top) == 12
    agree = human_agreement(run).set_index(["principle", "protocol"])
    assert agree.loc[("helpfulness", "both-orders"), "accuracy"] == 1.0
    assert agree.loc[("helpfulness", "single-order"), "accuracy"] == 1.0
    assert agree.loc[("helpfulness", "both-orders"), "kappa"] == 1.0


def test_first_position_judge_is_flagged_inconsistent(tmp_path: Path) -> None:
    _, run = judged_run(tmp_path, lambda r, n: "A")
    combined = combine_orders(run.pairs)
    assert not combined["consistent"].any()
    assert (
        combined["p_a"] == 0.5
    ).all()  # averaged over orders, a pure position bias carries no preference
    bias = position_bias(run.pairs).iloc[0]
    assert bias["p_prefer_first"] == 1.0 and bias["consistency"] == 0.0
    agree = human_agreement(run).set_index(["principle", "protocol"])
    assert agree.loc[("helpfulness", "both-orders"), "ties"] == 12
    assert agree.loc[("helpfulness", "soft"), "accuracy"] == 0.5


def test_single_order_plans_one_seeded_order(tmp_path: Path) -> None:
    items, run = judged_run(tmp_path, oracle, PairPlan(both_orders=False))
    assert len(items) == 12 * 3 * 4
    firsts = {i.generator for i in items if i.principle == "honesty"}
    assert len(firsts) == 3  # the coin shows each generator first somewhere
    assert combine_orders(run.pairs)["consistent"].isna().all()


def test_tournament_for_many_candidates() -> None:
    gens = [f"g{i}" for i in range(10)]
    pairs = case_pairs(gens, PairPlan(max_all_pairs_k=6, opponents=2), 0, "c")
    assert len(pairs) == 20 and all(a < b for a, b in pairs)
    assert case_pairs(gens, PairPlan(max_all_pairs_k=6, opponents=2), 0, "c") == pairs
    assert len(case_pairs(gens[:4], PairPlan(), 0, "c")) == 6


def test_prob_better() -> None:
    assert prob_better([0, 0, 0, 0, 1], [1, 0, 0, 0, 0]) == 1.0
    assert prob_better([0.2] * 5, [0.2] * 5) == pytest.approx(0.5)
    assert prob_better([0, 1, 0, 0, 0], [0, 0.5, 0.5, 0, 0]) == pytest.approx(0.25)


def test_rules_judge_is_not_asked_to_compare(tmp_path: Path) -> None:
    from harness.config import load_judge
    from harness.engine.runner import bind_judges

    suite = load_suite(Path(__file__).parent.parent / "suites" / "demo.yaml")
    constitution, _ = load_constitution("default")
    judges = bind_judges([load_judge("rules")])
    assert plan_pairs(suite.cases, constitution, judges, PairPlan()) == []
