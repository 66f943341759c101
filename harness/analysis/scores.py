"""Score summaries of a run: means with bootstrap confidence intervals, pass rates, weighted overall
scores.

Pure functions from the verdict table (columns of :class:`harness.records.Verdict`, as written by
:attr:`harness.rundir.RunData.verdicts`) to tidy tables. Only ``status == "scored"`` rows carry scores;
unscored and error verdicts are counted, never averaged in.

Bootstrap intervals resample *cases* (the unit that was sampled), with a seeded generator, so every
number is reproducible: the same inputs and seed give the same table. Above ``BOOTSTRAP_MAX_N``
cases the percentile bootstrap of a mean equals the normal interval to well within its own Monte
Carlo error, so the normal interval is used there: it costs O(n), not O(n × resamples) time and
memory.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd

from harness.records import Constitution

KEYS = ["judge", "principle", "generator"]
SUMMARY_COLUMNS = [
    *KEYS,
    "n",
    "n_unscored",
    "n_error",
    "mean",
    "ci_low",
    "ci_high",
    "pass_rate",
    "pass_low",
    "pass_high",
    "mean_normalized",
]
OVERALL_COLUMNS = ["judge", "generator", "n_cases", "overall", "ci_low", "ci_high"]
BOOTSTRAP_MAX_N = 5_000  # cases; more and a mean's interval is the normal one (CLT)
BLOCK_CELLS = 4_000_000  # resample counts held at once (resamples × cases): bounds memory


# --------------------------------------------------------------------------- interval primitives


def wilson_interval(hits: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for ``hits`` successes in ``n`` trials (NaNs when n == 0).

    ``hits`` may end in .5 (a tie counted half a hit): the interval then runs from the lower end for
    the whole count below to the upper end for the whole count above.
    """
    if n == 0:
        return math.nan, math.nan
    z = _z(level)
    return _wilson(math.floor(hits), n, z)[0], _wilson(math.ceil(hits), n, z)[1]


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    """Wilson's interval without continuity correction (Newcombe 1998, method 3), as SciPy's
    ``binomtest(k, n).proportion_ci(method="wilson")``; written out, so a summary needs no SciPy
    (its import takes about a second).
    """
    p = k / n
    scale = 2 * (n + z * z)
    centre = (2 * n * p + z * z) / scale
    half = z * math.sqrt(4 * n * p * (1 - p) + z * z) / scale
    return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)


def _z(level: float) -> float:
    """The standard normal quantile that a two-sided interval at ``level`` reaches out to."""
    return NormalDist().inv_cdf(0.5 + level / 2)


def resample_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """How often each of n units is drawn in each of n_boot resamples with replacement: (n_boot, n)."""
    draws = rng.integers(0, n, size=(n_boot, n))
    # Offset each resample's draws into its own block so one bincount counts them all.
    flat = (draws + np.arange(n_boot)[:, None] * n).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n)


def _percentiles(stats: np.ndarray, level: float) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap statistics, ignoring NaNs."""
    lo, hi = np.nanquantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_mean_ci(
    values: np.ndarray, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (one value per case)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return math.nan, math.nan
    if len(values) > BOOTSTRAP_MAX_N:
        return normal_mean_ci(values, level)
    rng = np.random.default_rng(seed)
    means = [c @ values / len(values) for c in _count_blocks(len(values), n_boot, rng)]
    return _percentiles(np.concatenate(means), level)


def normal_mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Normal-theory interval of a mean (for many cases, where the bootstrap agrees with it)."""
    z = _z(level)
    half = z * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    mean = float(np.mean(values))
    return mean - half, mean + half


def _count_blocks(n: int, n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Resample counts in blocks of resamples, so at most BLOCK_CELLS counts exist at a time."""
    size = max(1, BLOCK_CELLS // max(n, 1))
    return [resample_counts(n, min(size, n_boot - s), rng) for s in range(0, n_boot, size)]


# --------------------------------------------------------------------------- preparing verdicts


def scored(verdicts: pd.DataFrame, constitution: Constitution) -> pd.DataFrame:
    """The scored rows, with `normalized` and `passed` filled from the rubric where a judge left
    them out.
    """
    rows = verdicts[verdicts["status"] == "scored"].copy()
    rows["score"] = rows["score"].astype(float)
    scale = by_value(rows["principle"], _principle_attr(constitution, "scale_max"))
    threshold = by_value(rows["principle"], _principle_attr(constitution, "pass_threshold"))
    normalized = rows["normalized"].astype(float)
    rows["normalized"] = normalized.fillna((rows["score"] - 1) / (scale.astype(float) - 1))
    passed = rows["passed"].astype(object)
    rows["passed"] = passed.where(passed.notna(), rows["score"] >= threshold.astype(float)).astype(
        bool
    )
    return rows


def by_value(column: pd.Series, mapping: dict[str, float]) -> pd.Series:
    """``column.map(mapping)`` as floats, for a column of few distinct values (principles, judges):
    each distinct value is looked up once, not once per row in Python.
    """
    codes, uniques = pd.factorize(column)
    table = np.array([float(mapping.get(u, math.nan)) for u in uniques] + [math.nan])
    return pd.Series(table[codes], index=column.index)  # code -1 (a missing value) reads NaN


def _principle_attr(constitution: Constitution, attr: str) -> dict[str, float]:
    return {p.id: getattr(p, attr) for p in constitution.principles}


def _principle_order(constitution: Constitution, present: pd.Series) -> list[str]:
    """Principles in constitution order, then any the verdicts name that the constitution does not."""
    known = [p.id for p in constitution.principles]
    return known + sorted(set(present.unique()) - set(known))


def _order(frame: pd.DataFrame, constitution: Constitution) -> pd.DataFrame:
    """Sort by judge, principle (constitution order), generator."""
    rank = {p: i for i, p in enumerate(_principle_order(constitution, frame["principle"]))}
    key = frame["principle"].map(rank)
    out = frame.assign(_rank=key).sort_values(["judge", "_rank", "generator"], kind="stable")
    return out.drop(columns="_rank").reset_index(drop=True)


# --------------------------------------------------------------------------- summary


def summary(
    verdicts: pd.DataFrame,
    constitution: Constitution,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """One row per (judge, principle, generator), principles in constitution order.

    Columns: counts, mean score with bootstrap CI, pass rate with Wilson CI, mean normalized score.
    """
    if verdicts.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    # Only the columns the statistics read: each group below is a copy of its rows.
    verdicts = verdicts[[*KEYS, "case_id", "status", "score", "normalized", "passed"]]
    status = verdicts.groupby(KEYS)["status"].value_counts().unstack(fill_value=0)
    good = scored(verdicts, constitution)
    groups = dict(list(good.groupby(KEYS)))
    rows = []
    for key in status.index:
        counts = status.loc[key]
        stats = _group_stats(groups.get(key), n_boot=n_boot, seed=seed, level=level)
        ids = dict(zip(KEYS, key, strict=True))
        rows.append(
            {
                **ids,
                "n_unscored": int(counts.get("unscored", 0)),
                "n_error": int(counts.get("error", 0)),
                **stats,
            }
        )
    return _order(pd.DataFrame(rows, columns=SUMMARY_COLUMNS), constitution)


def _group_stats(
    rows: pd.DataFrame | None, *, n_boot: int, seed: int, level: float
) -> dict[str, float]:
    """Statistics of one (judge, principle, generator) group's scored rows."""
    if rows is None or rows.empty:
        return {"n": 0} | dict.fromkeys(SUMMARY_COLUMNS[6:], math.nan)
    per_case = rows.groupby("case_id")["score"].mean().to_numpy()  # a case is the resampling unit
    low, high = bootstrap_mean_ci(per_case, n_boot=n_boot, seed=seed, level=level)
    k, n = int(rows["passed"].sum()), len(rows)
    pass_low, pass_high = wilson_interval(k, n, level)
    return {
        "n": n,
        "mean": float(per_case.mean()),
        "ci_low": low,
        "ci_high": high,
        "pass_rate": k / n,
        "pass_low": pass_low,
        "pass_high": pass_high,
        "mean_normalized": float(rows.groupby("case_id")["normalized"].mean().mean()),
    }


# --------------------------------------------------------------------------- overall


def overall(
    verdicts: pd.DataFrame,
    constitution: Constitution,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per (judge, generator): the principle-weighted mean of mean normalized scores, with a
    bootstrap CI.

    The estimate is sum(w_p * m_p) / sum(w_p) over the principles p that have scores, where m_p is
    the mean over cases of principle p's normalized score (so it agrees with `summary`'s
    mean_normalized). The interval resamples whole cases, keeping each case's principles together.
    """
    # Only the columns read here: scoring copies the rows it keeps.
    verdicts = verdicts[[*KEYS, "case_id", "status", "score", "normalized", "passed"]]
    good = scored(verdicts, constitution) if not verdicts.empty else verdicts
    rows = []
    for (judge, generator), group in good.groupby(["judge", "generator"]):
        matrix, weights = case_matrix(group, constitution)
        low, high = _overall_ci(matrix, weights, n_boot, seed, level)
        rows.append(
            [judge, generator, len(matrix), float(weighted_mean(matrix, weights)[0]), low, high]
        )
    out = pd.DataFrame(rows, columns=OVERALL_COLUMNS)
    return out.sort_values(["judge", "generator"], kind="stable").reset_index(drop=True)


def _overall_ci(
    matrix: np.ndarray, weights: np.ndarray, n_boot: int, seed: int, level: float
) -> tuple[float, float]:
    """Bootstrap interval of the weighted overall score (normal interval for many cases)."""
    if len(matrix) > BOOTSTRAP_MAX_N:
        # Each case's own weighted mean over the principles it has: the unit of the normal interval,
        # centred on the exact estimate.
        present = ~np.isnan(matrix)
        w = np.where(present, weights, 0.0)
        per_case = (np.where(present, matrix, 0.0) * w).sum(axis=1) / w.sum(axis=1)
        low, high = normal_mean_ci(per_case[~np.isnan(per_case)], level)
        shift = float(weighted_mean(matrix, weights)[0]) - float(np.nanmean(per_case))
        return low + shift, high + shift
    rng = np.random.default_rng(seed)
    blocks = [weighted_mean(matrix, weights, c) for c in _count_blocks(len(matrix), n_boot, rng)]
    return _percentiles(np.concatenate(blocks), level)


def case_matrix(group: pd.DataFrame, constitution: Constitution) -> tuple[np.ndarray, np.ndarray]:
    """Cases × principles matrix of normalized scores (NaN where missing) and the principles'
    weights.
    """
    table = group.pivot_table(
        index="case_id", columns="principle", values="normalized", aggfunc="mean"
    )
    order = [p for p in _principle_order(constitution, group["principle"]) if p in table.columns]
    weight = {p.id: p.weight for p in constitution.principles}
    return table[order].to_numpy(dtype=float), np.array([weight.get(p, 1.0) for p in order])


def weighted_mean(
    matrix: np.ndarray, weights: np.ndarray, counts: np.ndarray | None = None
) -> np.ndarray:
    """Weighted mean over principles of per-principle mean scores, skipping principles with no
    scores.

    `counts` (resamples × cases) says how often each case is drawn; one result per resample. Without
    it, each case counts once. Works from counts so a bootstrap never copies the data.
    """
    if counts is None:
        counts = np.ones((1, len(matrix)))
    present = ~np.isnan(matrix)
    sums = counts @ np.where(present, matrix, 0.0)
    ns = counts @ present.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / ns
    have = ns > 0
    total = (np.where(have, means, 0.0) * weights).sum(axis=1)
    return total / np.where(have, weights, 0.0).sum(axis=1)
