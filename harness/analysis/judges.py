"""Judges side by side: size, cost and agreement, from the run folder alone.

This is where a distilled student meets the judges it stands in for (its teacher, the prompted
model, the rules): how many parameters each used, how fast each judged in this run, how often each
agrees with the human labels, and how often each pair of judges prefers the same candidate.

- ``judge_profile``: one row per judge.
- ``preference_agreement``: one row per pair of judges.

Preferences come from pointwise scores: within a case, of two candidates the one with the higher
score on a principle is preferred (equal scores are a tie). Every pair of candidates of every case
counts, on every principle both judges scored.
"""

from __future__ import annotations

import itertools
import math
from typing import cast

import pandas as pd

from harness.analysis.agreement import mean_scores, pointwise_agreement, preference
from harness.analysis.scores import wilson_interval
from harness.analysis.stats import cohen_kappa
from harness.protocol import single_order
from harness.rundir import RunData

PROFILE_COLUMNS = [
    "judge",
    "backend",
    "parameters",
    "trained_parameters",
    "judged",
    "seconds",
    "judgments_per_s",
    "human_n",
    "human_accuracy",
    "human_ci_low",
    "human_ci_high",
]
AGREEMENT_COLUMNS = ["judge_a", "judge_b", "n", "agreement", "ci_low", "ci_high", "kappa"]


def _sizes(run: RunData) -> dict[str, dict[str, int | None]]:
    """The latest parameter counts each judge reported in any session of the run."""
    sizes: dict[str, dict[str, int | None]] = {}
    for session in run.manifest.sessions:
        for judge, usage in session.judges.items():
            entry = sizes.setdefault(judge, {"parameters": None, "trained_parameters": None})
            for key in entry:
                value = getattr(usage, key)
                entry[key] = value if value is not None else entry[key]
    return sizes


def _timing(run: RunData) -> pd.DataFrame:
    """Judgments made in this run (cache hits excluded) and the seconds spent on them, per judge."""
    frames = [f[["judge", "latency_s", "cached"]] for f in (run.verdicts, run.pairs) if not f.empty]
    if not frames:
        return pd.DataFrame(columns=["judged", "seconds"])
    rows = pd.concat(frames)
    fresh = rows[~rows["cached"].astype(bool)]
    return fresh.groupby("judge").agg(judged=("latency_s", "size"), seconds=("latency_s", "sum"))


def _human(run: RunData) -> dict[str, tuple[int, float, float, float]]:
    """Pointwise agreement with the human labels pooled over principles: (n, accuracy, CI low, CI
    high).
    """
    pooled: dict[str, list[float]] = {}
    for row in pointwise_agreement(run):
        n, acc = cast(int, row["n"]), cast(float, row["accuracy"])
        hits_n = pooled.setdefault(str(row["judge"]), [0.0, 0.0])
        hits_n[0] += acc * n  # a tie counted half a hit, so hits may end in .5
        hits_n[1] += n
    out = {}
    for judge, (hits, total) in pooled.items():
        lo, hi = wilson_interval(hits, int(total))  # half hits from ties
        out[judge] = (int(total), hits / total, lo, hi)
    return out


def judge_profile(run: RunData) -> pd.DataFrame:
    """Per judge: backend, parameter counts, judgments made in this run and their speed, agreement
    with humans.
    """
    backends = {str(c.get("id")): str(c.get("backend")) for c in run.manifest.judge_configs}
    sizes, timing, human = _sizes(run), _timing(run), _human(run)
    rows = []
    for judge, backend in backends.items():
        judged = int(timing.loc[judge, "judged"]) if judge in timing.index else 0
        seconds = float(timing.loc[judge, "seconds"]) if judge in timing.index else 0.0
        n, acc, lo, hi = human.get(judge, (0, math.nan, math.nan, math.nan))
        size = sizes.get(judge, {})
        rows.append(
            {
                "judge": judge,
                "backend": backend,
                "parameters": size.get("parameters"),
                "trained_parameters": size.get("trained_parameters"),
                "judged": judged,
                "seconds": round(seconds, 3),
                "judgments_per_s": judged / seconds if seconds > 0 else math.nan,
                "human_n": n,
                "human_accuracy": acc,
                "human_ci_low": lo,
                "human_ci_high": hi,
            }
        )
    return pd.DataFrame(rows, columns=PROFILE_COLUMNS)


def _preferences(verdicts: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Each judge's preference between every two candidates of a case, per principle, in a coin-flip
    frame.
    """
    rows = []
    for (judge, principle, case_id), group in mean_scores(verdicts).groupby(level=[0, 1, 2]):
        by_gen = {key[3]: float(v) for key, v in group.items()}
        for a, b in itertools.combinations(sorted(by_gen), 2):
            first, second = single_order(a, b, seed, str(case_id))
            rows.append(
                {
                    "judge": judge,
                    "key": (principle, case_id, a, b),
                    "pref": preference(by_gen[first], by_gen[second]),
                }
            )
    return pd.DataFrame(rows, columns=["judge", "key", "pref"])


def preference_agreement(run: RunData, seed: int = 0) -> pd.DataFrame:
    """Per pair of judges: how often they prefer the same candidate (ties must match too), Wilson
    CI, kappa.
    """
    prefs = _preferences(run.verdicts, seed)
    table = {j: dict(zip(g["key"], g["pref"], strict=True)) for j, g in prefs.groupby("judge")}
    rows = []
    for ja, jb in itertools.combinations(sorted(table), 2):
        keys = sorted(set(table[ja]) & set(table[jb]))
        if not keys:
            continue
        a, b = [table[ja][k] for k in keys], [table[jb][k] for k in keys]
        hits = sum(x == y for x, y in zip(a, b, strict=True))
        lo, hi = wilson_interval(hits, len(keys))
        rows.append(
            {
                "judge_a": ja,
                "judge_b": jb,
                "n": len(keys),
                "agreement": hits / len(keys),
                "ci_low": lo,
                "ci_high": hi,
                "kappa": cohen_kappa(a, b),
            }
        )
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)
