"""Preference pairs from a run folder, filtered by explicit policies, as rows TRL's trainers load as
they are.

Where pairs come from (``source``):

- ``pairwise``: the judge compared the two candidates
(:func:`harness.analysis.pairwise.combine_orders`);
  the per-principle soft label is P(a better) averaged over the orders judged.
- ``pointwise``: no pairwise judgments from the judge, so every pair of candidates of a case is
  compared through their pointwise verdicts: P(x better) = ``prob_better(dist_x, dist_y)`` when both
  verdicts carry a distribution over the scale, else 1, 0 or 0.5 as x's score is higher, lower or
  equal.
- ``revision``: a critique → revision row of ``revisions.jsonl`` (status 'ok'/'scored') gives the
  pair (revision, original), the revision chosen; its soft label is the re-judged
  ``p_revised_better`` when the run has it, else null. A revision re-judged worse is dropped
  (``not_better``); one re-judged within the tie band follows ``--ties`` like any tie. A missing
  revisions.jsonl simply gives no revision pairs.

Definitions (also written into the dataset card):

- *overall* soft label: the weighted mean of the per-principle soft labels over the principles that
  were scored (weights = ``Principle.weight``); ``--principle ID`` uses that principle's label
  alone.
- *chosen* is the candidate the label favours: soft_label = P(chosen better) >= 0.5 on every row. A
  tie that is kept (|p - 0.5| <= tie band) is oriented by generator name, a before b.
- *margin* = |2p - 1| = 2 * soft_label - 1, in [0, 1]. *score_margin* (pointwise scores only) is
  chosen's minus rejected's score: the rubric score for one principle, the weighted mean normalized
  (0..1) score overall.

Policies run in a fixed order and each counts what it drops, so considered = dropped + kept (see
POLICY_STEPS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from harness.errors import ConfigError, RunError
from harness.rundir import RunData

OVERALL = "overall"
REVISIONS = "revisions.jsonl"
REVISION_OK = ("scored", "ok")
# float rounding allowance when comparing probabilities with 0.5 and margins with the minimum
EPS = 1e-9
Source = Literal["pairwise", "pointwise", "revision"]
SOURCES: tuple[Source, ...] = ("pairwise", "pointwise", "revision")
POLICY_STEPS: dict[str, str] = {
    "identical": "chosen and rejected texts are the same (after stripping surrounding whitespace)",
    "failed": "revision row not 'scored'/'ok', or its original candidate is not in the run",
    "other_principle": "revision made for a principle other than --principle",
    "unscored": "unscored/error verdict on a principle the label needs (--unscored)",
    "inconsistent": "verdict flipped with the order shown (--inconsistent drop)",
    "not_better": "revision re-judged not better than the original",
    "tie": "|p - 0.5| <= --tie-band (--ties drop)",
    "min_margin": "margin below --min-margin (a pair without a margin cannot meet a minimum above 0)",
}


@dataclass(frozen=True)
class ExportOptions:
    """The export's policies; every one is recorded in the dataset card."""

    ties: Literal["drop", "keep"] = "drop"
    tie_band: float = 0.0
    min_margin: float = 0.0
    inconsistent: Literal["drop", "keep"] = "drop"
    unscored: Literal["drop", "skip-principle"] = "drop"
    principle: str = OVERALL
    judge: str | None = None
    source: Literal["auto", "pairwise", "pointwise"] = "auto"
    revisions: bool = True


@dataclass
class Pair:
    """Two responses to one case, with P(a better) per scored principle; a and b are generator
    names.
    """

    case_id: str
    a: str
    b: str
    text_a: str
    text_b: str
    source: Source
    judge: str
    labels: dict[str, float] = field(default_factory=dict)
    expected: list[str] = field(default_factory=list)  # principles that should have a label
    consistent: dict[str, bool | None] = field(default_factory=dict)
    rationale: str = ""
    reviser: str = ""
    critique: str = ""
    principle: str = ""  # revisions: the principle the revision was made for
    failed: bool = False
    confirmed: bool | None = None


@dataclass
class Decision:
    """A kept pair: the label that decided it and which side is chosen."""

    pair: Pair
    used: list[str]
    p_a: float | None
    consistent: bool | None

    @property
    def a_chosen(self) -> bool:
        """Whether ``a`` is the chosen side (a tie or no probability keeps it)."""
        return self.p_a is None or self.p_a >= 0.5

    @property
    def soft_label(self) -> float | None:
        """P(chosen better), from the chosen side's view."""
        return None if self.p_a is None else max(self.p_a, 1 - self.p_a)

    @property
    def margin(self) -> float | None:
        """|2p - 1|: 0 for a coin flip, 1 for a certain preference."""
        return None if self.p_a is None else abs(2 * self.p_a - 1)


# --------------------------------------------------------------------------- which judge, which
# source


def judges_with_data(verdicts: pa.Table, pairs: pa.Table) -> dict[str, list[str]]:
    """Judges with at least one scored row, per source table (latest rows: judge, status)."""

    def ids(table: pa.Table) -> list[str]:
        scored = table.filter(pc.equal(table["status"], "scored"))
        return sorted(str(j) for j in pc.unique(scored["judge"]).to_pylist())

    return {"pairwise": ids(pairs), "pointwise": ids(verdicts)}


def select(
    run: RunData, options: ExportOptions, verdicts: pa.Table, pairs: pa.Table
) -> tuple[str | None, Source | None]:
    """The judge whose labels decide, and the table they come from; errors name the valid choices.

    ``verdicts`` and ``pairs``: the latest rows of the two logs, with at least judge and status.
    """
    have = judges_with_data(verdicts, pairs)
    known = sorted(
        {str(c.get("id")) for c in run.manifest.judge_configs}
        | set(have["pairwise"] + have["pointwise"])
    )
    if options.judge is not None and options.judge not in known:
        raise ConfigError(
            f"unknown judge {options.judge!r}: run {run.manifest.run_id} has "
            f"{', '.join(known) or 'no judges'}"
        )
    sources: list[Source] = (
        ["pairwise", "pointwise"] if options.source == "auto" else [options.source]
    )
    for src in sources:
        ids = have[src] if options.judge is None else [j for j in have[src] if j == options.judge]
        if len(ids) > 1:
            raise ConfigError(
                f"run {run.manifest.run_id} has {src} judgments from several judges "
                f"({', '.join(ids)}); choose one with --judge"
            )
        if ids:
            return ids[0], src
    if options.judge is not None or options.source != "auto":
        who = f"judge {options.judge!r}" if options.judge else "any judge"
        raise RunError(
            f"run {run.manifest.run_id}: no scored {'/'.join(sources)} judgments from {who}"
        )
    return None, None


def check_principle(run: RunData, principle: str) -> None:
    """--principle must be 'overall' or a principle of the run's constitution."""
    ids = [p.id for p in run.constitution.principles]
    if principle != OVERALL and principle not in ids:
        raise ConfigError(
            f"unknown principle {principle!r}: constitution {run.constitution.id} has "
            f"{', '.join(ids)} (or use 'overall')"
        )


# --------------------------------------------------------------------------- policies


def evaluate(pair: Pair, options: ExportOptions, weights: dict[str, float]) -> Decision | str:
    """The kept pair's decision, or the name of the policy step that drops it."""
    if pair.text_a.strip() == pair.text_b.strip():
        return "identical"
    if pair.failed:
        return "failed"
    if pair.source == "revision" and options.principle not in (OVERALL, pair.principle):
        return "other_principle"
    used = _used(pair, options)
    if used is None:
        return "unscored"
    p = _weighted(pair.labels, used, weights)
    flips = [pair.consistent.get(u) for u in used]
    consistent = False if False in flips else (True if True in flips else None)
    return _thresholds(Decision(pair, used, p, consistent), options)


def _weighted(labels: dict[str, float], used: list[str], weights: dict[str, float]) -> float | None:
    """Weighted mean of the used principles' labels (None when there are none: an unjudged
    revision).
    """
    if not used:
        return None
    return sum(weights.get(u, 1.0) * labels[u] for u in used) / sum(
        weights.get(u, 1.0) for u in used
    )


def _used(pair: Pair, options: ExportOptions) -> list[str] | None:
    """Principles whose labels decide the pair, or None when the unscored policy drops it."""
    if pair.source == "revision":
        return list(pair.labels)
    if options.principle != OVERALL:
        return [options.principle] if options.principle in pair.labels else None
    missing = [p for p in pair.expected if p not in pair.labels]
    if not pair.labels or (missing and options.unscored == "drop"):
        return None
    return [p for p in pair.expected if p in pair.labels]


def _thresholds(d: Decision, options: ExportOptions) -> Decision | str:
    """The consistency, confirmation, tie and margin policies, in that order."""
    if d.consistent is False and options.inconsistent == "drop":
        return "inconsistent"
    if d.pair.source == "revision" and _not_better(d.pair, d.p_a, options.tie_band):
        return "not_better"
    if d.margin is not None and d.margin / 2 <= options.tie_band + EPS and options.ties == "drop":
        return "tie"
    if options.min_margin > 0 and (d.margin is None or d.margin < options.min_margin - EPS):
        return "min_margin"
    return d


def _not_better(pair: Pair, p: float | None, band: float) -> bool:
    """Whether a re-judged revision was judged worse (then it is dropped).

    The probability, when present, rules (so a tie follows --ties), else the row's ``confirmed``
    flag.
    """
    return pair.confirmed is False if p is None else p < 0.5 - band - EPS


def new_counts() -> dict[str, Any]:
    """Counts before any pair: considered per source, dropped per policy step, kept per source."""
    return {
        "considered": 0,
        "considered_by_source": dict.fromkeys(SOURCES, 0),
        "dropped": dict.fromkeys(POLICY_STEPS, 0),
        "kept": 0,
        "kept_by_source": dict.fromkeys(SOURCES, 0),
    }


def apply_policies(
    pairs: list[Pair],
    options: ExportOptions,
    weights: dict[str, float],
    counts: dict[str, Any] | None = None,
) -> tuple[list[Decision], dict[str, Any]]:
    """Kept pairs, and ``counts`` (new ones unless given) with these pairs added."""
    counts = counts if counts is not None else new_counts()
    kept = []
    for pair in pairs:
        counts["considered"] += 1
        counts["considered_by_source"][pair.source] += 1
        outcome = evaluate(pair, options, weights)
        if isinstance(outcome, str):
            counts["dropped"][outcome] += 1
        else:
            kept.append(outcome)
            counts["kept"] += 1
            counts["kept_by_source"][pair.source] += 1
    # every pair is accounted for once
    assert counts["considered"] == sum(counts["dropped"].values()) + counts["kept"]
    return kept, counts
