"""Generic statistics for judge verdicts: paired tests, agreement, score-versus-size scaling fits.

Pure functions, numpy/pandas in and out (one exception, :func:`generator_parameters`, reads the
suite a run names). Bootstraps resample *cases*, the unit that was sampled, with seeded generators,
so every number is reproducible. Intervals and resampling primitives come from
:mod:`harness.analysis.scores`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from harness.analysis.scores import (
    BLOCK_CELLS,
    bootstrap_mean_ci,
    resample_counts,
    wilson_interval,
)

Alternative = Literal["two-sided", "less", "greater"]
EXACT_MCNEMAR_MAX = 25  # discordant pairs up to which McNemar uses the exact binomial test
EXACT_FLIPS_MAX = 16  # non-zero differences up to which the sign-flip test enumerates all 2^n flips
NORMAL_FLIPS_MIN = 20_000  # beyond this many, the sign-flip test uses its normal limit


def _quantiles(values: np.ndarray, level: float, axis: int = 0) -> tuple[Any, Any]:
    lo, hi = np.nanquantile(values, [(1 - level) / 2, (1 + level) / 2], axis=axis)
    return lo, hi


# --------------------------------------------------------------------------- paired tests


def paired_bootstrap_ci(
    base: np.ndarray, cand: np.ndarray, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(cand - base), resampling the pairs together."""
    return bootstrap_mean_ci(
        np.asarray(cand, float) - np.asarray(base, float), n_boot=n_boot, seed=seed, level=level
    )


def _tail(stat: np.ndarray, null: np.ndarray, alternative: Alternative) -> np.ndarray:
    """How many null statistics are at least as extreme as the observed one, per row."""
    eps = 1e-9 * (1 + np.abs(stat))  # float noise must not turn a tie into a miss
    if alternative == "less":
        return (null <= stat + eps).sum(axis=-1)
    if alternative == "greater":
        return (null >= stat - eps).sum(axis=-1)
    return (np.abs(null) >= np.abs(stat) - eps).sum(axis=-1)


def sign_flip_pvalues(
    diffs: np.ndarray, *, alternative: Alternative = "two-sided", n_perm: int = 5000, seed: int = 0
) -> np.ndarray:
    """Monte Carlo paired permutation p-values for rows of differences (shape (n,) or (sims, n)).

    Under H0 each difference is as likely positive as negative; the statistic is the sum. The
    p-value is (1 + #{flipped sums at least as extreme}) / (1 + n_perm), which is valid at every
    n_perm.
    """
    d = np.atleast_2d(np.asarray(diffs, float))
    rng = np.random.default_rng(seed)
    stat = d.sum(axis=1, keepdims=True)
    hits = np.zeros(d.shape[0])
    block = max(1, BLOCK_CELLS // max(d.shape[1], 1))  # sign draws held at once stay bounded
    for start in range(0, n_perm, block):
        signs = rng.choice([-1.0, 1.0], size=(min(block, n_perm - start), d.shape[1]))
        hits += _tail(stat, d @ signs.T, alternative)
    return (1 + hits) / (1 + n_perm)


def paired_permutation_test(
    base: np.ndarray,
    cand: np.ndarray,
    *,
    alternative: Alternative = "two-sided",
    n_perm: int = 5000,
    seed: int = 0,
) -> float:
    """p-value of H0 "cand and base are exchangeable within pairs" for the mean of cand - base.

    ``alternative="less"`` tests whether cand is lower. Exact (all 2^n sign flips) when at most
    :data:`EXACT_FLIPS_MAX` differences are non-zero, Monte Carlo otherwise.
    """
    d = np.asarray(cand, float) - np.asarray(base, float)
    d = d[d != 0]  # zero differences are the same under every flip
    if len(d) == 0:
        return 1.0
    if len(d) > NORMAL_FLIPS_MIN:
        return _normal_flip_pvalue(d, alternative)
    if len(d) > EXACT_FLIPS_MAX:
        return float(sign_flip_pvalues(d, alternative=alternative, n_perm=n_perm, seed=seed)[0])
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=len(d))))
    return float(_tail(np.array([[d.sum()]]), (signs @ d)[None, :], alternative)[0] / len(signs))


def _normal_flip_pvalue(d: np.ndarray, alternative: Alternative) -> float:
    """The sign-flip test's large-n form, with no flips drawn.

    Under H0 the sum of differences has mean 0 and variance sum(d^2), and is normal by the CLT
    (Lindeberg).
    """
    from scipy import stats as sps  # on first use: SciPy's stats take about a second to import

    z = float(d.sum()) / math.sqrt(float(np.square(d).sum()))
    if alternative == "less":
        return float(sps.norm.cdf(z))
    if alternative == "greater":
        return float(sps.norm.sf(z))
    return float(2 * sps.norm.sf(abs(z)))


def mcnemar(
    b: int, c: int, *, alternative: Alternative = "two-sided", exact: bool | None = None
) -> float:
    """McNemar's test p-value from the discordant counts b (pass→fail) and c (fail→pass).

    Exact binomial test of b ~ Bin(b + c, 1/2) when ``exact`` (default: b + c <= 25), else the
    continuity-corrected normal approximation. ``alternative="less"`` means the second condition
    passes less often (b > c).
    """
    from scipy import stats as sps  # on first use: SciPy's stats take about a second to import

    n = b + c
    if n == 0:
        return 1.0
    if exact or (exact is None and n <= EXACT_MCNEMAR_MAX):
        flipped = {"less": "greater", "greater": "less", "two-sided": "two-sided"}[alternative]
        return float(sps.binomtest(b, n, 0.5, alternative=flipped).pvalue)
    z = (c - b) / math.sqrt(n)
    cc = 1 / math.sqrt(n)
    if alternative == "less":
        return float(sps.norm.cdf(z + cc))
    if alternative == "greater":
        return float(sps.norm.sf(z - cc))
    return float(min(1.0, 2 * sps.norm.sf(abs(z) - cc)))


# --------------------------------------------------------------------------- agreement


def cohen_kappa(
    a: Sequence[Any],
    b: Sequence[Any],
    *,
    weights: Literal["linear", "quadratic"] | None = None,
    labels: Sequence[Any] | None = None,
) -> float:
    """Cohen's kappa of two raters' labels.

    With ``weights``, the weighted kappa over ordered ``labels`` (default: the sorted labels seen).
    """
    labels = sorted(set(a) | set(b)) if labels is None else list(labels)
    index = {v: i for i, v in enumerate(labels)}
    k = len(labels)
    observed = np.zeros((k, k))
    np.add.at(observed, ([index[v] for v in a], [index[v] for v in b]), 1)
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    dist = np.abs(np.subtract.outer(np.arange(k), np.arange(k))).astype(float)
    disagree = (
        (dist > 0).astype(float) if weights is None else dist if weights == "linear" else dist**2
    )
    denom = (disagree * expected).sum()
    return float(1 - (disagree * observed).sum() / denom) if denom > 0 else math.nan


def label_agreement(
    pred: Sequence[Any], truth: Sequence[Any], *, level: float = 0.95
) -> dict[str, float]:
    """Accuracy of predicted labels against true ones with a Wilson CI, and Cohen's kappa."""
    hits = int(sum(p == t for p, t in zip(pred, truth, strict=True)))
    lo, hi = wilson_interval(hits, len(truth), level)
    kappa = cohen_kappa(list(pred), list(truth)) if len(truth) else math.nan
    return {
        "n": len(truth),
        "accuracy": hits / len(truth) if len(truth) else math.nan,
        "ci_low": lo,
        "ci_high": hi,
        "kappa": kappa,
    }


# --------------------------------------------------------------------------- scaling


def scaling_fit(
    rows: pd.DataFrame,
    parameters: dict[str, float],
    *,
    value: str = "score",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    grid: int = 25,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Least-squares fit of per-generator mean score on log10(parameters), with case-bootstrap CIs.

    Needs three or more generators with known sizes (else the fit is empty and the curve has no
    rows). Returns the fit (slope per tenfold size, intercept, r2, slope CI) and the fitted line
    with its pointwise band on a grid of sizes, for plotting.
    """
    from scipy import stats as sps  # on first use: SciPy's stats take about a second to import

    known = rows[rows["generator"].map(lambda g: (parameters.get(g) or 0) > 0)]
    table = known.pivot_table(index="case_id", columns="generator", values=value, aggfunc="mean")
    if table.shape[1] < 3:
        return {"n_generators": float(table.shape[1])}, pd.DataFrame(
            columns=["log10_parameters", "fit", "lo", "hi"]
        )
    x = np.log10([float(parameters[g]) for g in table.columns])
    fit = sps.linregress(x, table.mean().to_numpy())
    present = table.notna().to_numpy()
    counts = resample_counts(len(table), n_boot, np.random.default_rng(seed)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (counts @ table.fillna(0).to_numpy()) / (counts @ present)  # resamples × generators
    xc = x - x.mean()
    slopes = (means - np.nanmean(means, axis=1, keepdims=True)) @ xc / (xc @ xc)
    intercepts = np.nanmean(means, axis=1) - slopes * x.mean()
    s_lo, s_hi = _quantiles(slopes, level)
    xs = np.linspace(x.min(), x.max(), grid)
    lo, hi = _quantiles(intercepts[:, None] + slopes[:, None] * xs, level)
    curve = pd.DataFrame(
        {"log10_parameters": xs, "fit": fit.intercept + fit.slope * xs, "lo": lo, "hi": hi}
    )
    return {
        "n_generators": float(len(x)),
        "slope": float(fit.slope),
        "intercept": float(fit.intercept),
        "r2": float(fit.rvalue**2),
        "slope_low": float(s_lo),
        "slope_high": float(s_hi),
    }, curve


def generator_parameters(run: Any) -> dict[str, float]:
    """Parameter counts of the run's generators.

    From the manifest's snapshot of the suite's ``generators`` (the run folder alone: never the
    suite file, which may have changed since).
    """
    snapshot = getattr(run.manifest, "generators", None) or {}
    gens = {name: g if isinstance(g, dict) else g.model_dump() for name, g in snapshot.items()}
    return {name: float(g["parameters"]) for name, g in gens.items() if g.get("parameters")}
