"""Adaptive stopping: an anytime-valid confidence sequence for the mean score of a principle ×
generator.

With ``--target-ci W`` judging of a principle × generator may stop as soon as the interval's
half-width is below W. An ordinary confidence interval checked after every verdict loses its
coverage (with enough looks it excludes the truth with probability far above alpha). A *confidence
sequence* covers the mean at every n simultaneously with probability at least 1 - alpha, so it stays
valid at any data-dependent stopping time.

Procedure: the **predictable plug-in empirical-Bernstein (PrPl-EB) confidence sequence** of
Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting" (JRSS-B 2024,
Theorem 2), for values in a known range [lo, hi] (mapped to [0, 1]). For x_1, x_2, ... in [0, 1],
with

    mu_t      = (1/2 + sum_{i<=t} x_i) / (t + 1)
    sigma2_t  = (1/4 + sum_{i<=t} (x_i - mu_i)^2) / (t + 1)
    lambda_t  = min(sqrt(2 log(2/alpha) / (sigma2_{t-1} t log(1 + t))), 1/2)
    psi(l)    = -log(1 - l) - l

the interval at time t is ``sum(lambda_i x_i) / sum(lambda_i) ± (log(2/alpha) + sum((x_i -
mu_{i-1})^2 psi(lambda_i))) / sum(lambda_i)``, clipped to [0, 1] and intersected with every earlier
interval (the running intersection is itself a confidence sequence). Its width adapts to the
variance of the scores, so a principle whose scores barely vary stops early.

What it assumes: the values arrive in an order that does not depend on them (the engine judges cases
in a seeded random order and feeds verdicts in that *planned* order, not in order of arrival, since
faster calls may be systematically shorter or longer answers). The target is then the mean over the
population the suite's cases are drawn from, the same estimand as the bootstrap CI of
:mod:`harness.analysis.scores`.

The point estimate reported is the plain sample mean (the number the summary table shows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

MAX_BET = 0.5  # truncation c of lambda_t; 1/2 is the paper's default


@dataclass(frozen=True)
class SequentialState:
    """Running sums of the PrPl-EB confidence sequence on the [0, 1] scale; update with
    :func:`update`.
    """

    alpha: float = 0.05
    n: int = 0
    sum_x: float = 0.0
    sum_sq: float = 0.0  # sum of (x_i - mu_i)^2, for sigma2
    sum_lam: float = 0.0
    sum_lam_x: float = 0.0
    sum_psi: float = 0.0  # sum of (x_i - mu_{i-1})^2 psi(lambda_i)
    lo: float = 0.0
    hi: float = 1.0


@dataclass(frozen=True)
class SequentialResult:
    """Where a stream stands: sample mean, interval (in the caller's units), n, and whether to stop."""

    estimate: float
    lo: float
    hi: float
    n: int
    stop: bool


def update(state: SequentialState, x: float) -> SequentialState:
    """The state after one more value x in [0, 1]."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"value {x} is outside [0, 1]")
    t = state.n + 1
    mu_prev = (0.5 + state.sum_x) / t
    sigma2_prev = (0.25 + state.sum_sq) / t
    log_term = math.log(2 / state.alpha)
    lam = min(math.sqrt(2 * log_term / (sigma2_prev * t * math.log1p(t))), MAX_BET)
    sum_x = state.sum_x + x
    mu = (0.5 + sum_x) / (t + 1)
    new = replace(
        state,
        n=t,
        sum_x=sum_x,
        sum_sq=state.sum_sq + (x - mu) ** 2,
        sum_lam=state.sum_lam + lam,
        sum_lam_x=state.sum_lam_x + lam * x,
        sum_psi=state.sum_psi + (x - mu_prev) ** 2 * (-math.log1p(-lam) - lam),
    )
    centre, margin = new.sum_lam_x / new.sum_lam, (log_term + new.sum_psi) / new.sum_lam
    return replace(new, lo=max(state.lo, centre - margin), hi=min(state.hi, centre + margin))


def confidence_sequence(x: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper PrPl-EB bounds after each of the values in [0, 1] along the last axis.

    Any leading axes are independent streams (for simulation).
    """
    x = np.asarray(x, float)
    t = np.arange(1, x.shape[-1] + 1)
    mu = (0.5 + np.cumsum(x, axis=-1)) / (t + 1)
    mu_prev = np.concatenate([np.full((*x.shape[:-1], 1), 0.5), mu[..., :-1]], axis=-1)
    sigma2 = (0.25 + np.cumsum((x - mu) ** 2, axis=-1)) / (t + 1)
    sigma2_prev = np.concatenate([np.full((*x.shape[:-1], 1), 0.25), sigma2[..., :-1]], axis=-1)
    log_term = math.log(2 / alpha)
    lam = np.minimum(np.sqrt(2 * log_term / (sigma2_prev * t * np.log1p(t))), MAX_BET)
    sum_lam = np.cumsum(lam, axis=-1)
    centre = np.cumsum(lam * x, axis=-1) / sum_lam
    margin = (log_term + np.cumsum((x - mu_prev) ** 2 * (-np.log1p(-lam) - lam), axis=-1)) / sum_lam
    lo = np.maximum.accumulate(np.maximum(centre - margin, 0.0), axis=-1)
    hi = np.minimum.accumulate(np.minimum(centre + margin, 1.0), axis=-1)
    return lo, hi


def _unit(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    low, high = bounds
    unit = (np.asarray(values, float) - low) / (high - low)
    if unit.size and (unit.min() < -1e-12 or unit.max() > 1 + 1e-12):
        raise ValueError(f"values fall outside the declared bounds {bounds}")
    return np.clip(unit, 0.0, 1.0)


def sequential_ci(
    values: np.ndarray,
    *,
    alpha: float = 0.05,
    target_half_width: float | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    min_n: int = 1,
) -> SequentialResult:
    """The estimate and anytime-valid interval after the stream so far, and whether to stop.

    ``values`` lie in ``bounds`` (e.g. (0, 1) for normalized scores, (1, 5) for a 1..5 rubric) and
    ``target_half_width`` is in the same units; stop is True once n >= min_n and the half-width is
    at most the target. Safe to call after every new value: the coverage holds at whatever n the
    caller stops.
    """
    values = np.asarray(values, float)
    low, high = bounds
    if len(values) == 0:
        return SequentialResult(math.nan, low, high, 0, False)
    lo, hi = confidence_sequence(_unit(values, bounds), alpha)
    lo_v, hi_v = low + lo[-1] * (high - low), low + hi[-1] * (high - low)
    stop = (
        target_half_width is not None
        and len(values) >= min_n
        and (hi_v - lo_v) / 2 <= target_half_width
    )
    return SequentialResult(float(values.mean()), float(lo_v), float(hi_v), len(values), bool(stop))


def convergence_curve(
    values: np.ndarray, *, alpha: float = 0.05, bounds: tuple[float, float] = (0.0, 1.0)
) -> pd.DataFrame:
    """Running estimate and interval against n (``n, estimate, lo, hi, half_width``), for the
    report.
    """
    values = np.asarray(values, float)
    low, high = bounds
    lo, hi = confidence_sequence(_unit(values, bounds), alpha)
    n = np.arange(1, len(values) + 1)
    frame = pd.DataFrame(
        {
            "n": n,
            "estimate": np.cumsum(values) / n,
            "lo": low + lo * (high - low),
            "hi": low + hi * (high - low),
        }
    )
    return frame.assign(half_width=(frame["hi"] - frame["lo"]) / 2)
