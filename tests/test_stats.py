"""harness.analysis.stats against reference implementations and published worked examples."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness.analysis import stats as S

# --------------------------------------------------------------------------- paired tests


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_exact_sign_flip_test_matches_scipy_permutation_test(alternative: str) -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=11)
    cand = base + rng.normal(0.4, 1.0, size=11)
    ours = S.paired_permutation_test(base, cand, alternative=alternative)  # type: ignore[arg-type]
    ref = sps.permutation_test(
        (cand, base),
        lambda x, y: np.mean(x - y),
        permutation_type="samples",
        alternative=alternative,
        n_resamples=np.inf,
    ).pvalue
    assert ours == pytest.approx(ref, rel=1e-9)


def test_monte_carlo_sign_flips_agree_with_exact() -> None:
    rng = np.random.default_rng(4)
    d = rng.normal(0.3, 1.0, size=14)
    exact = S.paired_permutation_test(np.zeros(14), d, alternative="greater")
    mc = S.sign_flip_pvalues(d, alternative="greater", n_perm=40000, seed=1)[0]
    assert mc == pytest.approx(exact, abs=0.006)


def test_permutation_test_ignores_zero_differences_and_handles_no_change() -> None:
    assert S.paired_permutation_test(np.ones(5), np.ones(5)) == 1.0
    base, cand = np.array([1, 2, 3, 4.0]), np.array([1, 2, 3, 5.0])
    assert (
        S.paired_permutation_test(base, cand, alternative="greater") == 0.5
    )  # one non-zero flip of two


def test_paired_bootstrap_ci_agrees_with_scipy_bootstrap() -> None:
    rng = np.random.default_rng(5)
    base = rng.integers(1, 6, 80).astype(float)
    cand = np.clip(base + rng.integers(-2, 2, 80), 1, 5)
    lo, hi = S.paired_bootstrap_ci(base, cand, n_boot=20000, seed=2)
    ref = sps.bootstrap(
        (cand, base),
        lambda x, y: np.mean(x - y),
        paired=True,
        n_resamples=20000,
        method="percentile",
        rng=np.random.default_rng(9),
    ).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.03) and hi == pytest.approx(ref.high, abs=0.03)


@pytest.mark.parametrize(("b", "c"), [(3, 10), (0, 7), (12, 4), (5, 5)])
def test_mcnemar_exact_is_the_binomial_test(b: int, c: int) -> None:
    assert S.mcnemar(b, c) == pytest.approx(sps.binomtest(b, b + c, 0.5).pvalue)
    assert S.mcnemar(b, c, alternative="less") == pytest.approx(
        sps.binomtest(b, b + c, 0.5, alternative="greater").pvalue
    )


def test_mcnemar_large_counts_use_the_continuity_corrected_chi_square() -> None:
    b, c = 30, 52
    chi2 = (abs(b - c) - 1) ** 2 / (b + c)
    assert S.mcnemar(b, c) == pytest.approx(sps.chi2.sf(chi2, 1))
    assert S.mcnemar(b, c, exact=True) == pytest.approx(sps.binomtest(b, b + c).pvalue)
    assert S.mcnemar(b, c, alternative="greater") < 0.05 < S.mcnemar(b, c, alternative="less")


# --------------------------------------------------------------------------- agreement


def test_cohen_kappa_textbook_example() -> None:
    # 50 proposals: both yes 20, A yes B no 5, A no B yes 10, both no 15 -> po 0.7, pe 0.5, kappa
    # 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert S.cohen_kappa(a, b) == pytest.approx(0.4)


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_cohen_kappa_matches_sklearn(weights: str | None) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(17)
    a = rng.integers(1, 6, 300)
    b = np.clip(a + rng.integers(-2, 3, 300), 1, 5)
    ours = S.cohen_kappa(a, b, weights=weights)  # type: ignore[arg-type]
    assert ours == pytest.approx(metrics.cohen_kappa_score(a, b, weights=weights))


def test_label_agreement() -> None:
    out = S.label_agreement(
        ["first", "second", "tie", "first"], ["first", "second", "first", "second"]
    )
    assert out["n"] == 4 and out["accuracy"] == 0.5
    assert out["ci_low"] < 0.5 < out["ci_high"] and -1 <= out["kappa"] <= 1


# --------------------------------------------------------------------------- scaling


def _rows(scores: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(f"c{i}", g, s) for g, ss in scores.items() for i, s in enumerate(ss)],
        columns=["case_id", "generator", "score"],
    )


def test_scaling_fit_matches_linregress_and_covers_the_slope() -> None:
    rng = np.random.default_rng(20)
    params = {"s": 1.35e8, "m": 1.7e9, "l": 7e9, "xl": 7e10}
    rows = pd.DataFrame(
        [
            (f"c{i}", g, 2.0 + 0.5 * np.log10(p / 1e8) + rng.normal(0, 0.8))
            for i in range(200)
            for g, p in params.items()
        ],
        columns=["case_id", "generator", "score"],
    )
    fit, curve = S.scaling_fit(rows, {**params, "unknown": 0}, n_boot=400)
    means = rows.groupby("generator")["score"].mean()
    ref = sps.linregress(np.log10([params[g] for g in means.index]), means.to_numpy())
    assert fit["slope"] == pytest.approx(ref.slope) and fit["r2"] == pytest.approx(ref.rvalue**2)
    assert fit["slope_low"] < 0.5 < fit["slope_high"]
    assert len(curve) == 25
    assert (curve["lo"] <= curve["fit"] + 1e-9).all() and (curve["fit"] <= curve["hi"] + 1e-9).all()


def test_scaling_fit_needs_three_sizes() -> None:
    rows = _rows({"a": [1, 2], "b": [2, 3]})
    fit, curve = S.scaling_fit(rows, {"a": 1e9, "b": 2e9})
    assert fit == {"n_generators": 2.0} and curve.empty


def test_generator_parameters_come_from_the_manifest_snapshot_only(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text("id: s\ngenerators:\n  small: {parameters: 1.35e8}\n", encoding="utf-8")
    run = SimpleNamespace(manifest=SimpleNamespace(suite=SimpleNamespace(path=str(suite))))
    assert S.generator_parameters(run) == {}  # the suite file is never read after judging
    run.manifest.generators = {"a": {"parameters": 7e9}, "b": {"description": "no size"}}
    assert S.generator_parameters(run) == {"a": 7e9}
