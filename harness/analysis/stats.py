"""Generic statistics for judge verdicts: paired tests, win rates, Bradley–Terry, length control, position bias,
agreement between judges and with human labels, and score-versus-size scaling fits.

Pure functions, numpy/pandas in and out (one exception, :func:`generator_parameters`, reads the suite a run
names). Bootstraps resample *cases*, the unit that was sampled, with seeded generators, so every number is
reproducible. Intervals and resampling primitives come from :mod:`harness.analysis.scores`.

Frames used here (beyond the verdict table of :class:`harness.schema.Verdict`):

* **pairs** (:data:`PAIR_COLUMNS`): ``case_id, a, b, outcome`` where ``outcome`` is the credit of generator
  ``a`` against ``b`` on that case: 1 a wins, 0 b wins, 0.5 tie, or a probability that a is preferred.
* **position results** (:data:`POSITION_COLUMNS`): one row per pairwise judgment as shown to the judge:
  ``case_id, principle, judge, first, second, p_first`` where ``first``/``second`` are the generators in the
  order shown and ``p_first`` is the judge's probability (1/0/0.5 for hard verdicts) of preferring ``first``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats as sps
from scipy.special import expit

from harness.analysis.scores import (
    BLOCK_CELLS,
    bootstrap_mean_ci,
    resample_counts,
    wilson_interval,
)

Alternative = Literal["two-sided", "less", "greater"]
PAIR_COLUMNS = ["case_id", "a", "b", "outcome"]
POSITION_COLUMNS = ["case_id", "principle", "judge", "first", "second", "p_first"]
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

    Under H0 each difference is as likely positive as negative; the statistic is the sum. The p-value is
    (1 + #{flipped sums at least as extreme}) / (1 + n_perm), which is valid at every n_perm.
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
    """The sign-flip test's large-n form: under H0 the sum of differences has mean 0 and variance
    sum(d^2), and is normal by the CLT (Lindeberg), so no flips need drawing."""
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
    continuity-corrected normal approximation. ``alternative="less"`` means the second condition passes
    less often (b > c).
    """
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


def mcnemar_pairs(
    base_pass: np.ndarray, cand_pass: np.ndarray, **kwargs: Any
) -> tuple[int, int, float]:
    """(b, c, p) for paired booleans: b = passed in base only, c = passed in cand only."""
    base, cand = np.asarray(base_pass, bool), np.asarray(cand_pass, bool)
    b, c = int((base & ~cand).sum()), int((~base & cand).sum())
    return b, c, mcnemar(b, c, **kwargs)


# --------------------------------------------------------------------------- win rates and Bradley–Terry


def pairs_from_scores(rows: pd.DataFrame, value: str = "score") -> pd.DataFrame:
    """Per case, every pair of generators (a < b by name) with the outcome of comparing their scores.

    ``rows`` are scored verdicts of one judge and principle (``case_id, generator, <value>``); several rows
    for a (case, generator) are averaged. Equal scores are ties (0.5).
    """
    table = rows.pivot_table(index="case_id", columns="generator", values=value, aggfunc="mean")
    parts = []
    for a, b in itertools.combinations(sorted(table.columns), 2):
        both = table[[a, b]].dropna()
        outcome = np.sign(both[a] - both[b]) / 2 + 0.5
        parts.append(
            pd.DataFrame({"case_id": both.index, "a": a, "b": b, "outcome": outcome.to_numpy()})
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=PAIR_COLUMNS)


def win_rates(
    pairs: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> pd.DataFrame:
    """Per (a, b): cases compared, wins, losses, ties and the win rate of a (ties count half) with a
    bootstrap CI over cases."""
    rows = []
    for (a, b), g in pairs.groupby(["a", "b"], sort=True):
        out = g["outcome"].to_numpy(float)
        lo, hi = bootstrap_mean_ci(out, n_boot=n_boot, seed=seed, level=level)
        rows.append(
            {
                "a": a,
                "b": b,
                "n": len(out),
                "wins": int((out > 0.5).sum()),
                "losses": int((out < 0.5).sum()),
                "ties": int((out == 0.5).sum()),
                "win_rate": float(out.mean()),
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    return pd.DataFrame(
        rows, columns=["a", "b", "n", "wins", "losses", "ties", "win_rate", "ci_low", "ci_high"]
    )


def _win_tensor(pairs: pd.DataFrame) -> tuple[list[str], list[str], np.ndarray]:
    """Generators, cases and W[case, i, j] = credit of i over j on that case."""
    gens = sorted(set(pairs["a"]) | set(pairs["b"]))
    cases = sorted(pairs["case_id"].unique())
    gi, ci = {g: k for k, g in enumerate(gens)}, {c: k for k, c in enumerate(cases)}
    w = np.zeros((len(cases), len(gens), len(gens)))
    c, a, b = (
        pairs["case_id"].map(ci).to_numpy(),
        pairs["a"].map(gi).to_numpy(),
        pairs["b"].map(gi).to_numpy(),
    )
    out = pairs["outcome"].to_numpy(float)
    np.add.at(w, (c, a, b), out)
    np.add.at(w, (c, b, a), 1 - out)
    return gens, cases, w


def bt_mm(
    wins: np.ndarray, *, prior: float = 0.0, max_iter: int = 5000, tol: float = 1e-10
) -> np.ndarray:
    """Bradley–Terry log-strengths (mean 0) by Hunter's MM algorithm from win matrices (..., k, k).

    ``wins[i, j]`` is the credit of i over j (a tie gives each side 0.5). ``prior`` adds that many virtual
    ties between every pair, which keeps strengths finite when a generator never wins.
    """
    w = wins + prior / 2 * (1 - np.eye(wins.shape[-1]))
    n, total = w + np.swapaxes(w, -1, -2), w.sum(axis=-1)
    p = np.ones(w.shape[:-1])
    for _ in range(max_iter):
        denom = (n / (p[..., :, None] + p[..., None, :])).sum(axis=-1)
        new = np.where(denom > 0, total / np.where(denom > 0, denom, 1), p)
        new = new / np.exp(np.log(np.maximum(new, 1e-300)).mean(axis=-1, keepdims=True))
        new = np.clip(
            new, 1e-10, 1e10
        )  # a winless generator (prior 0) heads to -inf; stop at about -23
        done = np.max(np.abs(new - p)) < tol
        p = new
        if done:
            break
    theta = np.log(p)
    return theta - theta.mean(axis=-1, keepdims=True)


def bradley_terry(
    pairs: pd.DataFrame,
    *,
    prior: float = 1.0,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Bradley–Terry ratings (natural-log strengths, mean 0) per generator with bootstrap CIs over cases.

    P(i beats j) = 1 / (1 + exp(rating_j - rating_i)). See :func:`bt_mm` for ``prior``.
    """
    if pairs.empty:
        return pd.DataFrame(columns=["generator", "rating", "ci_low", "ci_high"])
    gens, cases, w = _win_tensor(pairs)
    rating = bt_mm(w.sum(axis=0), prior=prior)
    counts = resample_counts(len(cases), n_boot, np.random.default_rng(seed))
    boot = bt_mm(np.einsum("bc,cij->bij", counts, w), prior=prior, max_iter=2000, tol=1e-8)
    lo, hi = _quantiles(boot, level)
    out = pd.DataFrame({"generator": gens, "rating": rating, "ci_low": lo, "ci_high": hi})
    return out.sort_values("rating", ascending=False, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- length control


def response_lengths(cases: Sequence[Any]) -> pd.DataFrame:
    """``case_id, generator, length`` (characters) of every candidate of a run's cases."""
    rows = [(c.id, cand.generator, len(cand.response)) for c in cases for cand in c.candidates]
    return pd.DataFrame(rows, columns=["case_id", "generator", "length"])


def _logistic_fit(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray, ridge: float = 1e-6, iters: int = 50
) -> np.ndarray:
    """Weighted logistic regression of soft labels y on [1, x], batched over rows of weights (B, n) -> (B, 2)."""
    design = np.stack([np.ones_like(x), x], axis=1)
    beta = np.zeros((weights.shape[0], 2))
    for _ in range(iters):
        prob = expit(beta @ design.T)
        grad = (weights * (y - prob)) @ design - ridge * beta
        h = np.einsum(
            "bn,ni,nj->bij", weights * prob * (1 - prob), design, design
        ) + ridge * np.eye(2)
        step = np.clip(
            np.linalg.solve(h, grad[..., None])[..., 0], -5, 5
        )  # damped: separable data diverge
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


def length_controlled_win_rate(
    outcome: np.ndarray,
    len_a: np.ndarray,
    len_b: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Win rate of a over b with the length difference regressed out, as AlpacaEval 2.0 does.

    Fits, by maximum likelihood with the soft outcome in [0, 1] as label (ties 0.5), the logistic model
    ``logit P(a preferred) = theta + phi * tanh((len_a - len_b) / sd(len_a - len_b))`` and reports
    ``sigmoid(theta)``: the predicted win rate at zero length difference. AlpacaEval's per-instruction
    difficulty term is left out (it needs many models per instruction); its average over instructions is
    absorbed in theta. The CI bootstraps cases (the sd is held at the full-sample value).
    """
    y = np.asarray(outcome, float)
    delta = np.asarray(len_a, float) - np.asarray(len_b, float)
    sd = delta.std(ddof=1) if len(delta) > 1 else 0.0
    x = np.tanh(delta / sd) if sd > 0 else np.zeros_like(delta)
    theta, phi = _logistic_fit(x, y, np.ones((1, len(y))))[0]
    boot = _logistic_fit(
        x, y, resample_counts(len(y), n_boot, np.random.default_rng(seed)).astype(float)
    )
    lo, hi = _quantiles(expit(boot[:, 0]), level)
    return {
        "n": len(y),
        "win_rate": float(y.mean()),
        "lc_win_rate": float(expit(theta)),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "length_coef": float(phi),
    }


def _standard_log_length(length: pd.Series) -> np.ndarray:
    z = np.log1p(length.to_numpy(float))
    sd = z.std()
    return (z - z.mean()) / sd if sd > 0 else z * 0


def length_controlled_scores(
    rows: pd.DataFrame,
    lengths: pd.DataFrame,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per generator: mean score, and the mean adjusted to the average response length, with a CI.

    Fits by least squares ``score = mu_generator + beta * z`` where z is log(1 + characters) standardised
    over all rows; ``lc_mean`` is mu_generator, the expected score at the average (log) length.
    ``rows`` are scored verdicts of one judge and principle; ``lengths`` as from :func:`response_lengths`.
    """
    data = rows[["case_id", "generator", "score"]].merge(lengths, on=["case_id", "generator"])
    gens = sorted(data["generator"].unique())
    design = np.column_stack(
        [(data["generator"] == g).to_numpy(float) for g in gens]
        + [_standard_log_length(data["length"])]
    )
    y = data["score"].to_numpy(float)
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    case_ids, case_index = np.unique(data["case_id"].to_numpy(), return_inverse=True)
    w = resample_counts(len(case_ids), n_boot, np.random.default_rng(seed))[:, case_index].astype(
        float
    )
    xtwx = np.einsum("bn,ni,nj->bij", w, design, design) + 1e-9 * np.eye(design.shape[1])
    boot = np.linalg.solve(xtwx, ((w * y) @ design)[..., None])[..., 0]
    lo, hi = _quantiles(boot[:, : len(gens)], level)
    means = data.groupby("generator")["score"].mean().reindex(gens).to_numpy()
    return pd.DataFrame(
        {
            "generator": gens,
            "mean": means,
            "lc_mean": coef[: len(gens)],
            "ci_low": lo,
            "ci_high": hi,
            "length_coef": coef[-1],
        }
    )


def score_length_correlation(rows: pd.DataFrame, lengths: pd.DataFrame) -> dict[str, float]:
    """Spearman correlation of score with response length, over all rows and within cases.

    The within-case figure correlates deviations from each case's mean score and mean log length, so it
    shows whether the judge favours the longer of two answers to the same prompt.
    """
    data = rows[["case_id", "generator", "score"]].merge(lengths, on=["case_id", "generator"])
    data = data.assign(log_len=np.log1p(data["length"].astype(float)))
    if len(data) < 3:
        return {"n": len(data), "spearman": math.nan, "p_value": math.nan, "within_case": math.nan}
    rho, p = sps.spearmanr(data["score"], data["length"])
    dev = data[["score", "log_len"]] - data.groupby("case_id")[["score", "log_len"]].transform(
        "mean"
    )
    moved = dev.abs().sum(axis=1) > 0
    within = (
        sps.spearmanr(dev.loc[moved, "score"], dev.loc[moved, "log_len"])[0]
        if moved.sum() > 2
        else math.nan
    )
    return {
        "n": len(data),
        "spearman": float(rho),
        "p_value": float(p),
        "within_case": float(within),
    }


# --------------------------------------------------------------------------- position bias


def order_pairs(results: pd.DataFrame) -> pd.DataFrame:
    """Match each pairwise judgment with the same pair shown in the other order.

    Returns ``case_id, principle, judge, a, b, p_ab, p_ba, p_a, first_bias, consistent`` where a is the
    generator shown first in the first order, p_ab = P(first) with a first, p_ba = P(first) with b first,
    p_a = (p_ab + 1 - p_ba) / 2 (the order-averaged preference for a), first_bias = (p_ab + p_ba) / 2 - 1/2
    (positive: the first-shown response is favoured) and consistent = the hard verdict names the same
    generator (or a tie) in both orders.
    """
    keys = ["case_id", "principle", "judge"]
    flipped = results.rename(columns={"first": "second", "second": "first", "p_first": "p_ba"})
    both = results.merge(flipped, on=[*keys, "first", "second"]).rename(
        columns={"first": "a", "second": "b", "p_first": "p_ab"}
    )
    both = both[both["a"] < both["b"]].reset_index(drop=True)
    both["p_a"] = (both["p_ab"] + 1 - both["p_ba"]) / 2
    both["first_bias"] = (both["p_ab"] + both["p_ba"]) / 2 - 0.5
    both["consistent"] = np.sign(both["p_ab"] - 0.5) == -np.sign(both["p_ba"] - 0.5)
    return both[[*keys, "a", "b", "p_ab", "p_ba", "p_a", "first_bias", "consistent"]]


def position_bias(
    results: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> pd.DataFrame:
    """Per judge and principle: how often the first-shown response wins, the order bias and flip rate.

    ``first_rate`` is the mean P(first) over all judgments (0.5 when unbiased, if orders are balanced);
    ``bias`` is the mean first_bias over pairs judged in both orders, with a bootstrap CI and a sign-flip
    p-value against 0; ``inconsistent`` is the share of those pairs whose verdict flips with the order,
    with a Wilson CI.
    """
    paired = order_pairs(results)
    rows = []
    for (judge, principle), g in results.groupby(["judge", "principle"], sort=True):
        p = paired[(paired["judge"] == judge) & (paired["principle"] == principle)]
        fb = p["first_bias"].to_numpy(float)
        lo, hi = bootstrap_mean_ci(fb, n_boot=n_boot, seed=seed, level=level)
        k = int((~p["consistent"]).sum())
        k_lo, k_hi = wilson_interval(k, len(p), level)
        rows.append(
            {
                "judge": judge,
                "principle": principle,
                "n_judgments": len(g),
                "first_rate": float(g["p_first"].mean()),
                "n_pairs": len(p),
                "bias": float(fb.mean()) if len(fb) else math.nan,
                "ci_low": lo,
                "ci_high": hi,
                "p_value": paired_permutation_test(np.zeros_like(fb), fb) if len(fb) else math.nan,
                "inconsistent": k / len(p) if len(p) else math.nan,
                "inconsistent_low": k_lo,
                "inconsistent_high": k_hi,
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- agreement


def cohen_kappa(
    a: Sequence[Any],
    b: Sequence[Any],
    *,
    weights: Literal["linear", "quadratic"] | None = None,
    labels: Sequence[Any] | None = None,
) -> float:
    """Cohen's kappa of two raters' labels; with ``weights`` the weighted kappa over ordered ``labels``
    (default: the sorted labels seen)."""
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


def krippendorff_alpha(
    data: np.ndarray, level: Literal["nominal", "ordinal", "interval"] = "ordinal"
) -> float:
    """Krippendorff's alpha of a raters × units array (NaN = missing), via the coincidence matrix.

    The ordinal metric is delta(c, k) = (sum of n_g for g from c to k - (n_c + n_k) / 2)^2 over the
    sorted values seen (Krippendorff 2011, "Computing Krippendorff's alpha-reliability").
    """
    data = np.asarray(data, float)
    values = np.unique(data[~np.isnan(data)])
    counts = np.stack([(data == v).sum(axis=0) for v in values], axis=1).astype(
        float
    )  # units × values
    m = counts.sum(axis=1)
    counts, m = counts[m >= 2], m[m >= 2]  # only units with two or more values are pairable
    if len(values) < 2 or len(m) == 0:
        return math.nan
    o = (counts / (m - 1)[:, None]).T @ counts - np.diag((counts / (m - 1)[:, None]).sum(axis=0))
    n_c = o.sum(axis=1)
    d2 = _alpha_metric(values, n_c, level)
    n = n_c.sum()
    return float(1 - (n - 1) * (o * d2).sum() / (np.outer(n_c, n_c) * d2).sum())


def _alpha_metric(values: np.ndarray, n_c: np.ndarray, level: str) -> np.ndarray:
    if level == "nominal":
        return 1 - np.eye(len(values))
    if level == "interval":
        return np.subtract.outer(values, values) ** 2
    cum = np.concatenate([[0.0], np.cumsum(n_c)])
    i, j = np.meshgrid(np.arange(len(values)), np.arange(len(values)), indexing="ij")
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    return (cum[hi + 1] - cum[lo] - (n_c[i] + n_c[j]) / 2) ** 2


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


def judge_agreement(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per principle: ordinal Krippendorff's alpha across judges, and quadratic-weighted Cohen's kappa
    (on rounded scores) for each pair of judges. Units are (case, generator)."""
    good = verdicts[verdicts["status"] == "scored"]
    rows = []
    for principle, g in good.groupby("principle", sort=False):
        table = g.pivot_table(
            index="judge", columns=["case_id", "generator"], values="score", aggfunc="mean"
        )
        alpha = krippendorff_alpha(table.to_numpy()) if len(table) > 1 else math.nan
        for j1, j2 in itertools.combinations(table.index, 2):
            both = table.loc[[j1, j2]].dropna(axis=1).round().to_numpy()
            kappa = (
                cohen_kappa(both[0], both[1], weights="quadratic") if both.shape[1] else math.nan
            )
            rows.append(
                {
                    "principle": principle,
                    "judge_a": j1,
                    "judge_b": j2,
                    "n": both.shape[1],
                    "kappa_quadratic": kappa,
                    "alpha_ordinal": alpha,
                    "judges": len(table),
                }
            )
        if len(table) < 2:
            rows.append({"principle": principle, "judges": len(table), "alpha_ordinal": alpha})
    return pd.DataFrame(
        rows,
        columns=[
            "principle",
            "judge_a",
            "judge_b",
            "n",
            "kappa_quadratic",
            "alpha_ordinal",
            "judges",
        ],
    )


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

    Needs three or more generators with known sizes (else the fit is empty and the curve has no rows).
    Returns the fit (slope per tenfold size, intercept, r2, slope CI) and the fitted line with its pointwise
    band on a grid of sizes, for plotting.
    """
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
    """Parameter counts of the run's generators, from the manifest's snapshot of the suite's
    ``generators`` (the run folder alone: never the suite file, which may have changed since)."""
    snapshot = getattr(run.manifest, "generators", None) or {}
    gens = {name: g if isinstance(g, dict) else g.model_dump() for name, g in snapshot.items()}
    return {name: float(g["parameters"]) for name, g in gens.items() if g.get("parameters")}
