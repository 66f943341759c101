"""harness.analysis.stats against reference implementations and published worked examples."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness.analysis import stats as S

NAN = np.nan
# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: 4 observers x 12 units.
KRIPPENDORFF_EXAMPLE = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
        [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
    ]
)


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


def test_mcnemar_pairs_counts_discordant_units() -> None:
    base = np.array([1, 1, 1, 0, 0, 1], bool)
    cand = np.array([1, 0, 0, 0, 1, 1], bool)
    b, c, p = S.mcnemar_pairs(base, cand)
    assert (b, c) == (2, 1) and p == pytest.approx(1.0)


# --------------------------------------------------------------------------- win rates and Bradley–Terry


def _rows(scores: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(f"c{i}", g, s) for g, ss in scores.items() for i, s in enumerate(ss)],
        columns=["case_id", "generator", "score"],
    )


def test_pairs_and_win_rates_from_pointwise_scores() -> None:
    pairs = S.pairs_from_scores(_rows({"x": [5, 3, 2, 4], "y": [4, 3, 3, 1]}))
    assert list(pairs["outcome"]) == [1.0, 0.5, 0.0, 1.0]
    table = S.win_rates(pairs, n_boot=500)
    row = table.iloc[0]
    assert (row["a"], row["b"], row["wins"], row["losses"], row["ties"]) == ("x", "y", 2, 1, 1)
    assert row["win_rate"] == pytest.approx(0.625) and row["ci_low"] <= 0.625 <= row["ci_high"]


def test_bradley_terry_two_players_has_the_closed_form() -> None:
    pairs = pd.DataFrame(
        {"case_id": range(10), "a": "p", "b": "q", "outcome": [1.0] * 7 + [0.0] * 2 + [0.5]}
    )
    bt = S.bradley_terry(pairs, prior=0.0, n_boot=200).set_index("generator")["rating"]
    assert bt["p"] - bt["q"] == pytest.approx(
        np.log(7.5 / 2.5), abs=1e-8
    )  # a tie is half a win each


def test_bradley_terry_matches_choix_and_covers_the_truth() -> None:
    choix = pytest.importorskip("choix")
    rng = np.random.default_rng(7)
    truth = np.array([0.0, 0.6, 1.1, -0.8])
    rows = []
    for case in range(600):
        i, j = sorted(rng.choice(4, 2, replace=False))
        p = 1 / (1 + np.exp(truth[j] - truth[i]))
        rows.append((case, f"g{i}", f"g{j}", float(rng.random() < p)))
    pairs = pd.DataFrame(rows, columns=S.PAIR_COLUMNS)
    bt = S.bradley_terry(pairs, prior=0.0, n_boot=400).set_index("generator").sort_index()
    ref = choix.ilsr_pairwise(
        4,
        [(int(a[1]), int(b[1])) if o else (int(b[1]), int(a[1])) for _, a, b, o in rows],
        alpha=0.0,
    )
    assert bt["rating"].to_numpy() == pytest.approx(ref - ref.mean(), abs=1e-6)
    centred = truth - truth.mean()
    assert ((bt["ci_low"] <= centred + 0.05) & (centred - 0.05 <= bt["ci_high"])).all()


def test_bradley_terry_prior_keeps_a_winless_generator_finite() -> None:
    pairs = pd.DataFrame({"case_id": range(6), "a": "p", "b": "q", "outcome": 1.0})
    bt = S.bradley_terry(pairs, prior=1.0, n_boot=100).set_index("generator")["rating"]
    assert bt["p"] - bt["q"] == pytest.approx(np.log(6.5 / 0.5), rel=1e-6)


# --------------------------------------------------------------------------- length control


def test_length_controlled_win_rate_matches_sklearn_soft_label_fit() -> None:
    linear = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(11)
    n = 500
    len_a, len_b = rng.integers(100, 3000, n), rng.integers(100, 3000, n)
    x = np.tanh((len_a - len_b) / np.std(len_a - len_b, ddof=1))
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.4 + 1.2 * x)))).astype(float)
    y[rng.random(n) < 0.15] = 0.5
    ours = S.length_controlled_win_rate(y, len_a, len_b, n_boot=300)
    # sklearn has no soft labels: AlpacaEval's trick duplicates each row as (label 1, weight y), (0, 1 - y).
    model = linear.LogisticRegression(C=1e12, tol=1e-12, max_iter=10000).fit(
        np.r_[x, x][:, None], np.r_[np.ones(n), np.zeros(n)], sample_weight=np.r_[y, 1 - y]
    )
    assert ours["lc_win_rate"] == pytest.approx(1 / (1 + np.exp(-model.intercept_[0])), abs=1e-5)
    assert ours["length_coef"] == pytest.approx(model.coef_[0, 0], abs=1e-4)
    assert ours["ci_low"] < ours["lc_win_rate"] < ours["ci_high"]


def test_length_controlled_win_rate_removes_a_pure_length_preference() -> None:
    rng = np.random.default_rng(12)
    n = 800
    len_b = rng.integers(200, 1500, n)
    len_a = len_b + rng.normal(400, 500, n)  # a is usually longer; the judge only looks at length
    x = np.tanh((len_a - len_b) / np.std(len_a - len_b, ddof=1))
    y = (rng.random(n) < 1 / (1 + np.exp(-2.5 * x))).astype(float)
    out = S.length_controlled_win_rate(y, len_a, len_b, n_boot=300)
    assert out["win_rate"] > 0.7
    assert out["ci_low"] < 0.5 < out["ci_high"] and abs(out["lc_win_rate"] - 0.5) < 0.06


def _length_run(rng: np.random.Generator, n: int = 300) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two generators of equal quality; 'long' writes longer answers and the judge rewards length."""
    rows, lengths = [], []
    for case in range(n):
        for gen, mean_len in (("short", 300), ("long", 900)):
            length = int(rng.lognormal(np.log(mean_len), 0.4))
            score = 3 + 0.8 * (np.log(length) - np.log(520)) + rng.normal(0, 0.5)
            rows.append((f"c{case}", gen, score))
            lengths.append((f"c{case}", gen, length))
    return pd.DataFrame(rows, columns=["case_id", "generator", "score"]), pd.DataFrame(
        lengths, columns=["case_id", "generator", "length"]
    )


def test_length_controlled_scores_equalise_generators_that_differ_only_in_length() -> None:
    rows, lengths = _length_run(np.random.default_rng(13))
    out = S.length_controlled_scores(rows, lengths, n_boot=300).set_index("generator")
    assert out.loc["long", "mean"] - out.loc["short", "mean"] > 0.7
    assert abs(out.loc["long", "lc_mean"] - out.loc["short", "lc_mean"]) < 0.15
    # lc_mean is the OLS coefficient of the generator with a standardised log-length covariate
    z = np.log1p(lengths["length"].to_numpy(float))
    design = np.column_stack(
        [(lengths["generator"] == g).to_numpy(float) for g in ["long", "short"]]
        + [(z - z.mean()) / z.std()]
    )
    ref = np.linalg.lstsq(design, rows["score"].to_numpy(), rcond=None)[0]
    assert out.loc[["long", "short"], "lc_mean"].to_numpy() == pytest.approx(ref[:2])
    assert (out["ci_low"] < out["lc_mean"]).all() and (out["lc_mean"] < out["ci_high"]).all()


def test_score_length_correlation_is_spearman() -> None:
    rows, lengths = _length_run(np.random.default_rng(14), n=100)
    out = S.score_length_correlation(rows, lengths)
    merged = rows.merge(lengths)
    assert out["spearman"] == pytest.approx(sps.spearmanr(merged["score"], merged["length"])[0])
    assert out["within_case"] > 0.3 and out["p_value"] < 1e-6


def test_response_lengths_from_cases() -> None:
    cases = [SimpleNamespace(id="c", candidates=[SimpleNamespace(generator="g", response="four")])]
    assert S.response_lengths(cases).to_dict("records") == [
        {"case_id": "c", "generator": "g", "length": 4}
    ]


# --------------------------------------------------------------------------- position bias


def _pairwise_results(rng: np.random.Generator, n: int, first_bonus: float) -> pd.DataFrame:
    rows = []
    for case in range(n):
        quality = rng.normal()
        for first, second, sign in (("a", "b", 1), ("b", "a", -1)):
            p = 1 / (1 + np.exp(-(sign * quality + first_bonus)))
            rows.append((f"c{case}", "honesty", "j", first, second, float(rng.random() < p)))
    return pd.DataFrame(rows, columns=S.POSITION_COLUMNS)


def test_order_pairs_joins_both_orders() -> None:
    results = pd.DataFrame(
        [
            ("c", "h", "j", "a", "b", 1.0),
            ("c", "h", "j", "b", "a", 1.0),
            ("d", "h", "j", "a", "b", 0.8),
            ("d", "h", "j", "b", "a", 0.2),
        ],
        columns=S.POSITION_COLUMNS,
    )
    paired = S.order_pairs(results).set_index("case_id")
    assert len(paired) == 2
    assert paired.loc["c", "first_bias"] == 0.5 and not paired.loc["c", "consistent"]
    assert paired.loc["d", "p_a"] == pytest.approx(0.8) and paired.loc["d", "consistent"]


def test_position_bias_detects_a_first_position_preference() -> None:
    biased = S.position_bias(
        _pairwise_results(np.random.default_rng(15), 400, 1.5), n_boot=500
    ).iloc[0]
    fair = S.position_bias(_pairwise_results(np.random.default_rng(16), 400, 0.0), n_boot=500).iloc[
        0
    ]
    assert biased["first_rate"] > 0.65 and biased["ci_low"] > 0 and biased["p_value"] < 0.001
    assert fair["ci_low"] < 0 < fair["ci_high"] and fair["p_value"] > 0.01
    assert biased["inconsistent"] > fair["inconsistent"]
    assert biased["inconsistent_low"] <= biased["inconsistent"] <= biased["inconsistent_high"]


# --------------------------------------------------------------------------- agreement


def test_cohen_kappa_textbook_example() -> None:
    # 50 proposals: both yes 20, A yes B no 5, A no B yes 10, both no 15 -> po 0.7, pe 0.5, kappa 0.4.
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


@pytest.mark.parametrize(
    ("level", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)]
)
def test_krippendorff_alpha_published_example(level: str, published: float) -> None:
    assert S.krippendorff_alpha(KRIPPENDORFF_EXAMPLE, level) == pytest.approx(published, abs=5e-4)  # type: ignore[arg-type]


def test_krippendorff_alpha_matches_the_krippendorff_package() -> None:
    krippendorff = pytest.importorskip("krippendorff")
    rng = np.random.default_rng(18)
    truth = rng.integers(1, 6, 60)
    data = np.clip(truth + rng.integers(-1, 2, (5, 60)), 1, 5).astype(float)
    data[rng.random(data.shape) < 0.2] = np.nan
    for level in ("nominal", "ordinal", "interval"):
        ref = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
        assert S.krippendorff_alpha(data, level) == pytest.approx(ref, abs=1e-9)


def test_label_agreement() -> None:
    out = S.label_agreement(
        ["first", "second", "tie", "first"], ["first", "second", "first", "second"]
    )
    assert out["n"] == 4 and out["accuracy"] == 0.5
    assert out["ci_low"] < 0.5 < out["ci_high"] and -1 <= out["kappa"] <= 1


def test_judge_agreement_per_principle() -> None:
    rng = np.random.default_rng(19)
    truth = rng.integers(1, 6, 40).astype(float)
    rows = [("j1", truth), ("j2", truth), ("j3", np.clip(truth + rng.integers(-1, 2, 40), 1, 5))]
    frame = pd.DataFrame(
        [
            {
                "status": "scored",
                "principle": "p",
                "judge": j,
                "case_id": f"c{i}",
                "generator": "g",
                "score": s,
            }
            for j, scores in rows
            for i, s in enumerate(scores)
        ]
    )
    out = S.judge_agreement(frame).set_index(["judge_a", "judge_b"])
    assert out.loc[("j1", "j2"), "kappa_quadratic"] == pytest.approx(1.0)
    assert out.loc[("j1", "j3"), "kappa_quadratic"] < 1
    matrix = np.vstack([r[1] for r in rows])
    assert out["alpha_ordinal"].iloc[0] == pytest.approx(S.krippendorff_alpha(matrix))


# --------------------------------------------------------------------------- scaling


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
