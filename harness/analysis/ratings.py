"""Agreement of judge scores with human *ratings* (a mean rating per candidate and principle).

Given, for one judge and one principle, a table of rated candidates (``case_id``, ``score`` from the
judge, ``human`` the mean human rating), :func:`rating_agreement` measures:

- **pairwise accuracy**: over every pair of candidates *of the same case* whose human ratings
  differ, the share the judge orders the same way (a judge tie counts half, as a coin would break
  it);
- **Spearman** and **Kendall** (tau-b) correlation between judge scores and human ratings, over all
  rated candidates pooled (turn-level correlation, as dialogue-evaluation papers report it).

Every 95 % interval is a percentile bootstrap over *cases*: pairs and candidates of one case share a
context and are not independent, so cases are the unit resampled. Pure functions, seeded, no I/O.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd

from harness.analysis.scores import resample_counts

COLUMNS = [
    "judge",
    "principle",
    "cases",
    "candidates",
    "pairs",
    "pair_accuracy",
    "pair_ci_low",
    "pair_ci_high",
    "judge_ties",
    "spearman",
    "spearman_ci_low",
    "spearman_ci_high",
    "kendall",
    "kendall_ci_low",
    "kendall_ci_high",
]
Correlation = Callable[[np.ndarray, np.ndarray], float]


def case_pairs(score: np.ndarray, human: np.ndarray) -> tuple[float, int, int]:
    """(credit, pairs, judge ties) over the pairs of one case's candidates whose ratings differ."""
    i, j = np.triu_indices(len(human), k=1)
    dh, ds = np.sign(human[i] - human[j]), np.sign(score[i] - score[j])
    rated = dh != 0
    ties = int(np.sum(rated & (ds == 0)))
    hits = float(np.sum(rated & (ds == dh))) + ties / 2
    return hits, int(np.sum(rated)), ties


def _percentile(values: np.ndarray, level: float) -> tuple[float, float]:
    if np.all(np.isnan(values)):
        return math.nan, math.nan
    lo, hi = np.nanquantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (NaN when either side is constant)."""
    from scipy import stats as sps  # on first use: SciPy's stats take about a second to import

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(sps.spearmanr(x, y).statistic)


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (NaN when either side is constant)."""
    from scipy import stats as sps  # on first use: SciPy's stats take about a second to import

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(sps.kendalltau(x, y).statistic)


def _boot_correlation(
    groups: list[np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    corr: Correlation,
    draws: np.ndarray,
) -> np.ndarray:
    """The correlation on each bootstrap resample of cases (rows of ``draws`` index the cases)."""
    out = np.empty(len(draws))
    for b, pick in enumerate(draws):
        rows = np.concatenate([groups[c] for c in pick])
        out[b] = corr(x[rows], y[rows])
    return out


def rating_agreement(
    table: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, float | int]:
    """Pairwise accuracy and Spearman / Kendall correlation of ``score`` with ``human``, with CIs.

    ``table`` has one row per rated candidate: ``case_id``, ``score`` (the judge's), ``human``
    (the mean human rating). Rows with a missing score or rating are dropped.
    """
    table = table.dropna(subset=["score", "human"])
    codes, cases = pd.factorize(table["case_id"])
    x, y = table["score"].to_numpy(float), table["human"].to_numpy(float)
    groups = [np.flatnonzero(codes == c) for c in range(len(cases))]
    per_case = np.array([case_pairs(x[g], y[g]) for g in groups]).reshape(-1, 3)
    hits, pairs, ties = per_case[:, 0], per_case[:, 1], per_case[:, 2]
    rng = np.random.default_rng(seed)
    out: dict[str, float | int] = {
        "cases": len(cases),
        "candidates": len(table),
        "pairs": int(pairs.sum()),
        "judge_ties": int(ties.sum()),
    }
    total = pairs.sum()
    out["pair_accuracy"] = float(hits.sum() / total) if total else math.nan
    out["pair_ci_low"], out["pair_ci_high"] = math.nan, math.nan
    if total and len(cases) > 1:
        counts = resample_counts(len(cases), n_boot, rng)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = (counts @ hits) / (counts @ pairs)
        out["pair_ci_low"], out["pair_ci_high"] = _percentile(boot, level)
    draws = rng.integers(0, len(cases), size=(n_boot, len(cases))) if len(cases) > 1 else None
    for name, corr in (("spearman", spearman), ("kendall", kendall)):
        out[name] = corr(x, y)
        lo = hi = math.nan
        if draws is not None and not math.isnan(out[name]):
            with warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore"
                )  # constant resamples give NaN, ignored by the quantiles
                lo, hi = _percentile(_boot_correlation(groups, x, y, corr, draws), level)
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = lo, hi
    return out


def word_count(text: str) -> int:
    """Words in a reply: the reply-length baseline's score."""
    return len(text.split())
