"""Calibrate a student's reward-to-rubric mapping on held-out human-labelled pairs.

The pointwise score of a head is ``1 + (N - 1) · sigmoid((r - center) / spread)``. Training
sets ``center`` and ``spread`` from the spread of rewards of genuine answers, so a score there says
where an answer sits among typical ones, not whether people would prefer it. Calibration refits
both by Platt scaling on held-out pairs: every answer people preferred is a positive, every answer
they rejected a negative, and ``sigmoid((r - center) / spread)`` becomes the estimated probability
that an answer with reward ``r`` is the preferred kind. A score at or above the middle of the scale
(the default pass threshold, 3 of 5) then means "more likely preferred than rejected".

The result is kept next to the student as ``calibration.json`` (:data:`CALIBRATION`) and applied
when the student is loaded; it is part of the student's content hash, so cached verdicts are redone.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from harness.analysis.scores import wilson_interval

CALIBRATION = "calibration.json"  # the same name as harness.student.artefact.CALIBRATION


def platt(rewards: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(center, spread) of the logistic fit P(label = 1 | r) = sigmoid((r - center) / spread)."""
    r = np.asarray(rewards, float)
    y = np.asarray(labels, float)
    mu, sd = float(r.mean()), float(r.std() or 1.0)
    z = (r - mu) / sd

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        t = w[0] * z + w[1]
        p = expit(t)
        value = float(np.sum(np.logaddexp(0, t) - y * t)) + 1e-4 * float(w @ w)
        grad = np.array([np.sum((p - y) * z), np.sum(p - y)]) + 2e-4 * w
        return value, grad

    a, b = minimize(loss, np.zeros(2), jac=True, method="L-BFGS-B").x
    if a <= 1e-6:  # no signal: keep the scores flat at the middle rather than invert them
        return mu, sd * 1e6
    return float(mu - b * sd / a), float(sd / a)


def _rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(k, n)
    return {"n": n, "k": k, "rate": k / n if n else math.nan, "ci_low": lo, "ci_high": hi}


def pass_rates(
    chosen: np.ndarray, rejected: np.ndarray, center: float, spread: float, threshold: float = 3.0
) -> dict[str, Any]:
    """Pass rates of preferred and rejected answers under one mapping (scale 1..5)."""

    def passed(r: np.ndarray) -> int:
        return int(np.sum(1 + 4 * expit((r - center) / spread) >= threshold))

    return {
        "preferred": _rate(passed(chosen), len(chosen)),
        "rejected": _rate(passed(rejected), len(rejected)),
    }


def curve(rewards: np.ndarray, labels: np.ndarray, center: float, spread: float) -> list[dict]:
    """Per rounded calibrated score 1..5: the mean predicted P(preferred) and the observed share."""
    p = expit((np.asarray(rewards, float) - center) / spread)
    score = np.round(1 + 4 * p)
    out = []
    for s in range(1, 6):
        mask = score == s
        n = int(mask.sum())
        if n:
            row = _rate(int(np.asarray(labels)[mask].sum()), n)
            out.append({"score": float(s), "predicted": float(p[mask].mean()), **row})
    return out


def calibrate_head(
    chosen: np.ndarray, rejected: np.ndarray, before: tuple[float, float]
) -> dict[str, Any]:
    """The calibration record of one head from rewards of held-out (chosen, rejected) pairs."""
    rewards = np.concatenate([chosen, rejected])
    labels = np.concatenate([np.ones(len(chosen)), np.zeros(len(rejected))])
    center, spread = platt(rewards, labels)
    return {
        "center": center,
        "spread": spread,
        "n_pairs": len(chosen),
        "pair_accuracy": float(np.mean(np.asarray(chosen) > np.asarray(rejected))),
        "before": {
            "center": before[0],
            "spread": before[1],
            **pass_rates(chosen, rejected, *before),
        },
        "after": pass_rates(chosen, rejected, center, spread),
        "curve": curve(rewards, labels, center, spread),
    }
