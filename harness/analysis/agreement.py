"""Meta-evaluation: how often a judge agrees with human preference labels, under several protocols.

Protocols (one row each per judge × principle):

- ``single-order``: one pairwise judgment per labelled pair, in a seeded random order (the order a
  run with ``--single-order`` would have used);
- ``both-orders``: the two orders' probabilities averaged, then the side above 0.5 picked;
- ``soft``: the probability the judge gave the human's choice (expected accuracy of sampling its
  soft label);
- ``pointwise``: the candidate with the higher pointwise score (expected score when a distribution
  exists).

In the hard protocols a tie counts as half right, as a coin flip would break it; ``ties`` says how
many.

Labels are compared in a per-case coin-flip frame (which of the two is called "first" is seeded
random), so Cohen's kappa is meaningful even when every human label names the same generator.

Human *ratings* (``human_scores`` on candidates) are compared with pointwise scores by
:func:`human_rating_agreement` (pairwise accuracy, Spearman, Kendall; see
:mod:`harness.analysis.ratings`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np
import pandas as pd

from harness.analysis.pairwise import combine_orders
from harness.analysis.ratings import COLUMNS as RATING_COLUMNS
from harness.analysis.ratings import rating_agreement, word_count
from harness.analysis.scores import bootstrap_mean_ci, wilson_interval
from harness.analysis.stats import label_agreement
from harness.protocol import single_order
from harness.records import Case
from harness.rundir import RunData

COLUMNS = ["judge", "principle", "protocol", "n", "accuracy", "ci_low", "ci_high", "kappa", "ties"]


def _labelled(cases: list[Case], principles: list[str]) -> Iterator[tuple[Case, str]]:
    for case in cases:
        pref = case.human_preference
        if pref is not None:
            for pid in principles if pref.principle is None else [pref.principle]:
                yield case, pid


def _frame(case: Case, seed: int) -> tuple[str, str]:
    pref = case.human_preference
    assert pref is not None
    return single_order(pref.chosen, pref.rejected, seed, case.id)


def _side(frame: tuple[str, str], p_first: float) -> str:
    return "tie" if p_first == 0.5 else ("first" if p_first > 0.5 else "second")


def _truth(case: Case, frame: tuple[str, str]) -> str:
    assert case.human_preference is not None
    return "first" if frame[0] == case.human_preference.chosen else "second"


def _hard_row(
    judge: str, principle: str, protocol: str, pred: list[str], truth: list[str]
) -> dict[str, object]:
    """Accuracy counting a tie as half right (a coin would break it), Wilson interval, Cohen's
    kappa.
    """
    agree = label_agreement(pred, truth)
    ties = pred.count("tie")
    hits = sum(p == t for p, t in zip(pred, truth, strict=True)) + ties / 2
    lo, hi = wilson_interval(hits, len(truth))
    return {
        "judge": judge,
        "principle": principle,
        "protocol": protocol,
        "n": len(truth),
        "accuracy": hits / len(truth),
        "ci_low": lo,
        "ci_high": hi,
        "kappa": agree["kappa"],
        "ties": ties,
    }


def _soft_row(judge: str, principle: str, probs: list[float], seed: int) -> dict[str, object]:
    lo, hi = bootstrap_mean_ci(np.asarray(probs), seed=seed)
    mean = float(np.mean(probs)) if probs else math.nan
    return {
        "judge": judge,
        "principle": principle,
        "protocol": "soft",
        "n": len(probs),
        "accuracy": mean,
        "ci_low": lo,
        "ci_high": hi,
        "kappa": math.nan,
        "ties": 0,
    }


def pairwise_agreement(run: RunData, seed: int = 0) -> list[dict[str, object]]:
    """single-order, both-orders and soft agreement from the run's pairwise judgments."""
    if run.pairs.empty:
        return []
    combined = combine_orders(run.pairs).set_index(["judge", "principle", "case_id", "a", "b"])
    ordered = run.pairs[run.pairs["status"] == "scored"].set_index(
        ["judge", "principle", "case_id", "first", "second"]
    )
    rows = []
    principles = [p.id for p in run.constitution.principles]
    for judge in sorted(run.pairs["judge"].unique()):
        for pid in principles:
            acc: dict[str, list] = {
                "single": [],
                "single_t": [],
                "both": [],
                "both_t": [],
                "soft": [],
            }
            for case, _ in (
                (c, p) for c, p in _labelled(run.labelled_cases(), principles) if p == pid
            ):
                _collect(acc, case, judge, pid, combined, ordered, seed)
            if acc["both"]:
                rows.append(_hard_row(judge, pid, "both-orders", acc["both"], acc["both_t"]))
                rows.append(_soft_row(judge, pid, acc["soft"], seed))
            if acc["single"]:
                rows.append(_hard_row(judge, pid, "single-order", acc["single"], acc["single_t"]))
    return rows


def _collect(
    acc: dict[str, list],
    case: Case,
    judge: str,
    pid: str,
    combined: pd.DataFrame,
    ordered: pd.DataFrame,
    seed: int,
) -> None:
    frame = _frame(case, seed)
    truth = _truth(case, frame)
    a, b = sorted(frame)
    key = (judge, pid, case.id, a, b)
    if key in combined.index:
        p_a = float(combined.loc[key, "p_a"])
        p_first = p_a if frame[0] == a else 1 - p_a
        acc["both"].append(_side(frame, p_first))
        acc["both_t"].append(truth)
        acc["soft"].append(p_first if truth == "first" else 1 - p_first)
    okey = (judge, pid, case.id, *frame)
    if okey in ordered.index:
        winner = ordered.loc[okey, "winner"]
        winner = winner.iloc[0] if isinstance(winner, pd.Series) else winner
        acc["single"].append(str(winner))
        acc["single_t"].append(truth)


def mean_scores(verdicts: pd.DataFrame) -> pd.Series:
    """Mean scored verdict by (judge, principle, case, generator)."""
    good = verdicts[verdicts["status"] == "scored"]
    return good.groupby(["judge", "principle", "case_id", "generator"])["score"].mean()


def preference(score_first: float, score_second: float) -> str:
    """'first', 'second' or 'tie': which of two candidates the higher pointwise score prefers."""
    return (
        "tie"
        if score_first == score_second
        else ("first" if score_first > score_second else "second")
    )


def pointwise_agreement(run: RunData, seed: int = 0) -> list[dict[str, object]]:
    """Agreement of pointwise scores (higher score wins) with the human labels."""
    principles = [p.id for p in run.constitution.principles]
    labelled = list(_labelled(run.labelled_cases(), principles))
    if not labelled:
        return []
    # Only the labelled cases' verdicts: the rest of a large run has nothing to agree with.
    verdicts = run.verdicts[run.verdicts["case_id"].isin({c.id for c, _ in labelled})]
    means = mean_scores(verdicts)
    score = means.to_dict()
    rows = []
    for judge in sorted(means.index.get_level_values("judge").unique()):
        for pid in principles:
            pred, truth = [], []
            for case, _ in ((c, p) for c, p in labelled if p == pid):
                frame = _frame(case, seed)
                s = [score.get((judge, pid, case.id, g)) for g in frame]
                if s[0] is not None and s[1] is not None:
                    pred.append(preference(s[0], s[1]))
                    truth.append(_truth(case, frame))
            if truth:
                rows.append(_hard_row(judge, pid, "pointwise", pred, truth))
    return rows


ALL_TAGS = "(all)"  # the tag column of the overall block


def human_agreement(run: RunData, seed: int = 0) -> pd.DataFrame:
    """Every protocol's agreement with the human labels, per judge and principle."""
    rows = pairwise_agreement(run, seed) + pointwise_agreement(run, seed)
    return pd.DataFrame(rows, columns=COLUMNS)


def human_agreement_by_tag(run: RunData, seed: int = 0) -> pd.DataFrame:
    """``human_agreement`` for the labelled cases of each tag separately (a suite mixing sources,
    e.g. LLMBar and MT-Bench, gets one block per source), then an overall block over every labelled
    case (tag ``(all)``), with a leading ``tag`` column.
    """
    labelled = run.labelled_cases()
    tags = sorted({t for c in labelled for t in c.tags})
    blocks = []
    for tag in tags:
        subset = dataclasses.replace(run, _cases=[c for c in labelled if tag in c.tags])
        blocks.append(human_agreement(subset, seed).assign(tag=tag))
    if not blocks:
        return pd.DataFrame(columns=["tag", *COLUMNS])
    blocks.append(human_agreement(run, seed).assign(tag=ALL_TAGS))  # every labelled case once
    return pd.concat(blocks, ignore_index=True)[["tag", *COLUMNS]]


# --------------------------------------------------------------------------- human ratings

LENGTH_BASELINE = "baseline:reply-length"


def rated_candidates(cases: list[Case]) -> pd.DataFrame:
    """One row per rated candidate and principle: case, generator, principle, rating, words."""
    rows = [
        {
            "case_id": case.id,
            "generator": cand.generator,
            "principle": pid,
            "human": rating,
            "words": word_count(cand.response),
        }
        for case in cases
        for cand in case.candidates
        for pid, rating in cand.human_scores.items()
    ]
    return pd.DataFrame(rows, columns=["case_id", "generator", "principle", "human", "words"])


def human_rating_agreement(
    run: RunData, seed: int = 0, n_boot: int = 2000, baseline: bool = True
) -> pd.DataFrame:
    """Per judge and principle, agreement of pointwise scores with the candidates' human ratings.

    Pairwise accuracy over pairs whose ratings differ, Spearman and Kendall, each with a
    case-bootstrap CI.

    With ``baseline``, a row per principle scores each reply by its length in words
    (``baseline:reply-length``), the cheapest judge there is.
    """
    rated = rated_candidates(run.rated_cases())
    if rated.empty:
        return pd.DataFrame(columns=RATING_COLUMNS)
    means = mean_scores(run.verdicts).rename("score").reset_index()
    rows = []
    for judge in sorted(means["judge"].unique()):
        mine = means[means["judge"] == judge].drop(columns="judge")
        joined = rated.merge(mine, on=["principle", "case_id", "generator"])
        rows += _rating_rows(judge, joined, seed, n_boot)
    if baseline:
        rows += _rating_rows(LENGTH_BASELINE, rated.assign(score=rated["words"]), seed, n_boot)
    return pd.DataFrame(rows, columns=RATING_COLUMNS)


def _rating_rows(judge: str, joined: pd.DataFrame, seed: int, n_boot: int) -> list[dict]:
    return [
        {"judge": judge, "principle": pid, **rating_agreement(group, n_boot=n_boot, seed=seed)}
        for pid, group in joined.groupby("principle", sort=True)
    ]


def human_rating_agreement_by_tag(run: RunData, seed: int = 0) -> pd.DataFrame:
    """``human_rating_agreement`` for the rated cases of each tag, with a leading ``tag`` column."""
    rated = run.rated_cases()
    tags = sorted({t for c in rated for t in c.tags})
    blocks = [
        human_rating_agreement(
            dataclasses.replace(run, _cases=[c for c in rated if tag in c.tags]), seed
        ).assign(tag=tag)
        for tag in tags
    ]
    if not blocks:
        return pd.DataFrame(columns=["tag", *RATING_COLUMNS])
    return pd.concat(blocks, ignore_index=True)[["tag", *RATING_COLUMNS]]
