"""Adaptive stopping: the confidence sequence keeps its coverage under repeated looks and saves
calls."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.analysis import sequential as Q

ALPHA = 0.05
SIMS, T = 800, 1200
LIKERT = np.linspace(0, 1, 5)  # a 1..5 rubric, normalized


def streams(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """SIMS independent streams of T normalized scores, and their true mean."""
    if kind == "likert":
        p = np.array([0.05, 0.10, 0.25, 0.35, 0.25])
        return LIKERT[rng.choice(5, size=(SIMS, T), p=p)], float(p @ LIKERT)
    if kind == "easy":  # almost always the top score: low variance
        p = np.array([0.0, 0.0, 0.02, 0.08, 0.90])
        return LIKERT[rng.choice(5, size=(SIMS, T), p=p)], float(p @ LIKERT)
    if kind == "coin":  # pass/fail at 50 %: the largest variance a [0, 1] score can have
        return (rng.random((SIMS, T)) < 0.5).astype(float), 0.5
    return rng.beta(2, 5, size=(SIMS, T)), 2 / 7  # expected values from soft labels


def stopping_time(
    x: np.ndarray, target_half_width: float, *, alpha: float = 0.05, min_n: int = 1
) -> np.ndarray:
    """For streams of [0, 1] values (rows), the first n at which the half-width is at most the
    target
    (the stream length when never), for simulations of calls saved."""
    lo, hi = Q.confidence_sequence(np.atleast_2d(x), alpha)
    ok = ((hi - lo) / 2 <= target_half_width) & (np.arange(1, lo.shape[-1] + 1) >= min_n)
    return np.where(ok.any(axis=-1), ok.argmax(axis=-1) + 1, lo.shape[-1])


def covered(lo: np.ndarray, hi: np.ndarray, mu: float) -> np.ndarray:
    return (lo <= mu) & (mu <= hi)


@pytest.mark.parametrize("kind", ["likert", "easy", "coin", "beta"])
def test_coverage_holds_at_every_n_at_once(kind: str) -> None:
    x, mu = streams(kind, np.random.default_rng(1))
    lo, hi = Q.confidence_sequence(x, ALPHA)
    ever_missed = (~covered(lo, hi, mu)).any(axis=1).mean()
    # Time-uniform: the chance the interval EVER excludes the mean over 1500 looks stays below
    # alpha.
    assert ever_missed <= ALPHA


@pytest.mark.parametrize("kind", ["likert", "easy", "coin", "beta"])
def test_coverage_at_the_adaptive_stopping_time(kind: str) -> None:
    x, mu = streams(kind, np.random.default_rng(2))
    lo, hi = Q.confidence_sequence(x, ALPHA)
    stop = stopping_time(x, 0.05, alpha=ALPHA)
    rows = np.arange(SIMS)
    assert covered(lo[rows, stop - 1], hi[rows, stop - 1], mu).mean() >= 1 - ALPHA


def test_a_fixed_n_interval_checked_after_every_verdict_loses_coverage() -> None:
    """Why the harness does not simply stop when an ordinary 95 % CI is narrow enough."""
    x, mu = streams("likert", np.random.default_rng(3))
    n = np.arange(1, T + 1)
    mean = np.cumsum(x, axis=1) / n
    sd = np.sqrt(np.maximum(np.cumsum(x * x, axis=1) / n - mean**2, 0))
    half = 1.96 * sd / np.sqrt(n)
    ever_missed = (~covered(mean - half, mean + half, mu))[:, 10:].any(axis=1).mean()
    assert ever_missed > 4 * ALPHA


def test_stopping_saves_calls_against_fixed_n_designs() -> None:
    target = 0.05
    hoeffding_n = math.ceil(
        math.log(2 / ALPHA) / (2 * target**2)
    )  # fixed n that guarantees +-0.05: 738
    likert = stopping_time(streams("likert", np.random.default_rng(4))[0], target, alpha=ALPHA)
    easy = stopping_time(streams("easy", np.random.default_rng(5))[0], target, alpha=ALPHA)
    assert likert.max() < T  # every stream stopped before the end of a 1200-case suite
    assert likert.mean() < 0.6 * hoeffding_n
    assert easy.mean() < 0.5 * likert.mean()  # low-variance principles stop much earlier


def test_incremental_state_matches_the_vectorised_sequence() -> None:
    x, _ = streams("beta", np.random.default_rng(6))
    lo, hi = Q.confidence_sequence(x[0, :200], ALPHA)
    state = Q.SequentialState(alpha=ALPHA)
    for i, value in enumerate(x[0, :200]):
        state = Q.update(state, float(value))
        assert (state.lo, state.hi) == pytest.approx((lo[i], hi[i]), abs=1e-12)


def test_sequential_ci_in_rubric_points_with_stop_flag() -> None:
    rng = np.random.default_rng(7)
    points = rng.choice([3.0, 4.0, 5.0], size=800, p=[0.2, 0.5, 0.3])
    early = Q.sequential_ci(points[:20], target_half_width=0.2, bounds=(1, 5))
    late = Q.sequential_ci(points, target_half_width=0.2, bounds=(1, 5))
    assert not early.stop and late.stop and (late.hi - late.lo) / 2 <= 0.2
    assert 1 <= late.lo < 4.1 < late.hi <= 5 and late.estimate == pytest.approx(points.mean())
    assert Q.sequential_ci(points, target_half_width=0.2, bounds=(1, 5), min_n=10_000).stop is False
    empty = Q.sequential_ci(np.array([]), bounds=(1, 5))
    assert (empty.n, empty.lo, empty.hi, empty.stop) == (0, 1, 5, False)


def test_convergence_curve_is_nested_and_narrowing() -> None:
    rng = np.random.default_rng(8)
    curve = Q.convergence_curve(rng.choice([1.0, 2, 3, 4, 5], size=300), bounds=(1, 5))
    assert list(curve.columns) == ["n", "estimate", "lo", "hi", "half_width"] and len(curve) == 300
    assert (np.diff(curve["lo"]) >= 0).all() and (np.diff(curve["hi"]) <= 0).all()
    assert curve["half_width"].iloc[-1] < curve["half_width"].iloc[9]


def test_values_outside_the_bounds_are_rejected() -> None:
    with pytest.raises(ValueError, match="outside"):
        Q.sequential_ci(np.array([0.5, 6.0]), bounds=(1, 5))
    with pytest.raises(ValueError, match="outside"):
        Q.update(Q.SequentialState(), 1.5)
