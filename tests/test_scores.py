"""Score summaries on small data whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from harness.analysis.scores import (
    OVERALL_COLUMNS,
    SUMMARY_COLUMNS,
    bootstrap_mean_ci,
    overall,
    resample_counts,
    summary,
    wilson_interval,
)
from harness.records import Constitution, Principle, Verdict
from harness.rundir import VERDICT_COLUMNS


def _principle(pid: str, scale: int = 5, weight: float = 1.0, threshold: float = 4) -> Principle:
    return Principle(
        id=pid,
        statement=pid,
        rubric={k: str(k) for k in range(1, scale + 1)},
        critique_request="c",
        revision_request="r",
        weight=weight,
        pass_threshold=threshold,
    )


# Constitution order is deliberately not alphabetical.
CONST = Constitution(
    id="t",
    principles=[
        _principle("zeal", weight=3.0),
        _principle("accuracy", scale=3, weight=1.0, threshold=2),
    ],
)


def v(
    case: str,
    principle: str,
    score: float | None,
    *,
    gen: str = "g",
    judge: str = "j",
    status: str = "scored",
    **extra: object,
) -> Verdict:
    """A verdict; scored ones get normalized and passed from the constitution unless given."""
    fields: dict[str, object] = {"score": score, "status": status}
    if status == "scored" and score is not None:
        p = CONST.principle(principle)
        fields |= {
            "normalized": (score - 1) / (p.scale_max - 1),
            "passed": score >= p.pass_threshold,
        }
    fields |= extra
    ids = {
        "item_id": f"{case}{principle}{gen}{judge}",
        "case_id": case,
        "generator": gen,
        "judge": judge,
    }
    return Verdict.model_validate(ids | {"principle": principle} | fields)


def frame(*verdicts: Verdict) -> pd.DataFrame:
    frame = pd.DataFrame([v.model_dump() for v in verdicts], columns=VERDICT_COLUMNS)
    keys = ["case_id", "generator", "principle", "judge"]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- primitives


def test_wilson_textbook_example() -> None:
    """3 of 10 at 95 %: Wilson gives [0.1078, 0.6032] (the normal approximation would dip below
    0.02)."""
    assert wilson_interval(3, 10) == pytest.approx((0.1078, 0.6032), abs=1e-4)


def test_wilson_of_half_hits_spans_the_whole_counts_around_them() -> None:
    lo, hi = wilson_interval(3.5, 10)
    assert (lo, hi) == (wilson_interval(3, 10)[0], wilson_interval(4, 10)[1])
    assert lo < 0.35 < hi


def test_wilson_is_scipys_interval_written_out() -> None:
    from scipy.stats import binomtest

    for n in (1, 2, 7, 40, 333):
        for k in sorted({0, 1, n // 3, n - 1, n}):
            for level in (0.8, 0.95, 0.99):
                ci = binomtest(k, n).proportion_ci(level, method="wilson")
                assert wilson_interval(k, n, level) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_of_nothing_is_undefined() -> None:
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_resample_counts_draw_n_with_replacement() -> None:
    counts = resample_counts(7, 500, np.random.default_rng(1))
    assert counts.shape == (500, 7)
    assert (counts.sum(axis=1) == 7).all()
    assert counts.mean() == pytest.approx(1.0, abs=0.05)  # every unit equally likely


def test_bootstrap_ci_of_a_constant_is_a_point() -> None:
    low, high = bootstrap_mean_ci(np.full(12, 3.25))
    assert low == pytest.approx(3.25) and high == pytest.approx(3.25)


def test_bootstrap_ci_is_seeded_and_brackets_the_mean() -> None:
    values = np.random.default_rng(0).normal(3.0, 1.0, size=30)
    a = bootstrap_mean_ci(values, seed=3)
    assert a == bootstrap_mean_ci(values, seed=3)
    assert a != bootstrap_mean_ci(values, seed=4)
    assert a[0] < values.mean() < a[1]
    assert (
        bootstrap_mean_ci(values, level=0.5)[1] - bootstrap_mean_ci(values, level=0.5)[0]
        < a[1] - a[0]
    )


# --------------------------------------------------------------------------- summary


def test_summary_counts_means_and_pass_rates() -> None:
    rows = frame(
        v("c1", "zeal", 5), v("c2", "zeal", 3), v("c3", "zeal", 4),
        v("c4", "zeal", None, status="unscored", reason="no digit"),
        v("c5", "zeal", None, status="error", reason="HTTP 500"),
        v("c1", "accuracy", 1), v("c2", "accuracy", 3),
    )  # fmt: skip
    out = summary(rows, CONST).set_index("principle")
    zeal = out.loc["zeal"]
    assert (zeal["n"], zeal["n_unscored"], zeal["n_error"]) == (3, 1, 1)
    assert zeal["mean"] == pytest.approx(4.0)
    assert zeal["pass_rate"] == pytest.approx(2 / 3)  # 5 and 4 pass at >= 4
    assert (zeal["pass_low"], zeal["pass_high"]) == pytest.approx(wilson_interval(2, 3))
    assert zeal["mean_normalized"] == pytest.approx(np.mean([1.0, 0.5, 0.75]))
    assert zeal["ci_low"] <= 4.0 <= zeal["ci_high"]
    acc = out.loc["accuracy"]
    assert (acc["n"], acc["mean"], acc["pass_rate"], acc["mean_normalized"]) == (2, 2.0, 0.5, 0.5)


def test_summary_orders_principles_as_the_constitution_does() -> None:
    rows = frame(
        v("c1", "accuracy", 2, gen="b"),
        v("c1", "zeal", 2, gen="a"),
        v("c1", "accuracy", 2, gen="a"),
    )
    out = summary(rows, CONST)
    assert list(out.columns) == SUMMARY_COLUMNS
    assert list(zip(out["principle"], out["generator"], strict=True)) == [
        ("zeal", "a"),
        ("accuracy", "a"),
        ("accuracy", "b"),
    ]


def test_summary_of_a_group_with_no_scores() -> None:
    out = summary(frame(v("c1", "zeal", None, status="error", reason="x")), CONST).iloc[0]
    assert (out["n"], out["n_error"]) == (0, 1)
    assert math.isnan(out["mean"]) and math.isnan(out["pass_rate"])


def test_summary_fills_normalized_and_passed_from_the_rubric() -> None:
    rows = frame(
        v("c1", "accuracy", 3, normalized=None, passed=None),
        v("c2", "accuracy", 1, normalized=None, passed=None),
    )
    out = summary(rows, CONST).iloc[0]
    assert out["mean_normalized"] == pytest.approx(0.5)  # (1.0 + 0.0) / 2 on a 1..3 scale
    assert out["pass_rate"] == pytest.approx(0.5)


def test_summary_of_no_verdicts_is_empty() -> None:
    assert summary(frame(), CONST).empty
    assert list(overall(frame(), CONST).columns) == OVERALL_COLUMNS


def test_summary_bootstraps_cases_not_rows() -> None:
    constant = frame(*(v(f"c{i}", "zeal", 4) for i in range(5)))
    out = summary(constant, CONST).iloc[0]
    assert out["ci_low"] == pytest.approx(4.0) and out["ci_high"] == pytest.approx(4.0)


# --------------------------------------------------------------------------- overall


def test_overall_is_the_principle_weighted_mean_of_normalized_scores() -> None:
    rows = frame(
        # normalized 1.0, 0.5 -> mean 0.75, weight 3
        v("c1", "zeal", 5), v("c2", "zeal", 3),
        # normalized 0.0, 0.5 -> mean 0.25, weight 1
        v("c1", "accuracy", 1), v("c2", "accuracy", 2),
    )  # fmt: skip
    out = overall(rows, CONST).iloc[0]
    assert out["overall"] == pytest.approx((3 * 0.75 + 1 * 0.25) / 4)
    assert out["n_cases"] == 2
    assert out["ci_low"] <= out["overall"] <= out["ci_high"]


def test_overall_agrees_with_summary_normalized_means() -> None:
    rows = frame(
        v("c1", "zeal", 5),
        v("c2", "zeal", 2),
        v("c3", "zeal", 4),
        v("c1", "accuracy", 3),
        v("c3", "accuracy", 1),
    )
    per = summary(rows, CONST).set_index("principle")["mean_normalized"]
    expected = (3 * per["zeal"] + 1 * per["accuracy"]) / 4
    assert overall(rows, CONST).iloc[0]["overall"] == pytest.approx(expected)


def test_overall_skips_principles_without_scores_and_ignores_unscored() -> None:
    rows = frame(v("c1", "zeal", 3), v("c1", "accuracy", None, status="unscored", reason="?"))
    out = overall(rows, CONST).iloc[0]
    assert out["overall"] == pytest.approx(0.5)  # zeal alone
    assert out["ci_low"] == pytest.approx(0.5) and out["ci_high"] == pytest.approx(0.5)


def test_overall_is_per_judge_and_generator() -> None:
    rows = frame(
        v("c1", "zeal", 5, gen="a"),
        v("c1", "zeal", 1, gen="b"),
        v("c1", "zeal", 3, gen="a", judge="k"),
    )
    out = overall(rows, CONST)
    assert list(zip(out["judge"], out["generator"], out["overall"], strict=True)) == [
        ("j", "a", 1.0),
        ("j", "b", 0.0),
        ("k", "a", 0.5),
    ]
