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

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from harness.analysis.pairwise import combine_orders, prob_better
from harness.analysis.scores import scored
from harness.errors import ConfigError, RunError
from harness.rundir import PAIRS, VERDICTS, RunData, read_jsonl_tolerant

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


def judges_with_data(run: RunData) -> dict[str, list[str]]:
    """Judges with at least one scored row, per source table."""

    def ids(frame: pd.DataFrame) -> list[str]:
        return (
            sorted(frame.loc[frame["status"] == "scored", "judge"].unique())
            if not frame.empty
            else []
        )

    return {
        "pairwise": ids(run.with_rationale(PAIRS)),
        "pointwise": ids(run.with_rationale(VERDICTS)),
    }


def select(run: RunData, options: ExportOptions) -> tuple[str | None, Source | None]:
    """The judge whose labels decide, and the table they come from; errors name the valid choices."""
    have = judges_with_data(run)
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


# --------------------------------------------------------------------------- building pairs


def texts_of(run: RunData) -> dict[tuple[str, str], str]:
    """Response text by (case id, generator)."""
    return {(c.id, cand.generator): cand.response for c in run.cases for cand in c.candidates}


def _text(texts: dict[tuple[str, str], str], case_id: str, gen: str, table: str) -> str:
    try:
        return texts[(case_id, gen)]
    except KeyError:
        raise RunError(
            f"{table} names candidate {gen!r} of case {case_id!r}, which cases.jsonl lacks"
        ) from None


def _ordered(principles: set[str], run: RunData) -> list[str]:
    """Principles in constitution order (then any others by name)."""
    known = [p.id for p in run.constitution.principles]
    return [p for p in known if p in principles] + sorted(principles - set(known))


Cells = dict[tuple[str, ...], dict[str, Any]]


def judge_pairs(run: RunData, judge: str | None) -> pd.DataFrame:
    """The judge's ordered pairwise judgments combined over orders (``combine_orders``)."""
    return combine_orders(run.with_rationale(PAIRS)[run.with_rationale(PAIRS)["judge"] == judge])


def pairwise_pairs(
    run: RunData, judge: str, combined_orders: pd.DataFrame | None = None
) -> list[Pair]:
    """One pair per (case, a, b) the judge compared, whatever the status of its judgments."""
    rows = run.with_rationale(PAIRS)[run.with_rationale(PAIRS)["judge"] == judge]
    expected = _ordered(set(rows["principle"]), run)
    frame = judge_pairs(run, judge) if combined_orders is None else combined_orders
    combined: Cells = frame.set_index(["case_id", "a", "b", "principle"]).to_dict("index")
    failed: dict[tuple[str, str, str], set[str]] = {}
    notes: dict[tuple[str, str, str], list[str]] = {}
    for r in rows.itertuples(
        index=False
    ):  # one pass: a groupby per pair is far slower on large runs
        key = (r.case_id, *sorted((r.first, r.second)))
        bad = failed.setdefault(key, set())
        if r.status != "scored":
            bad.add(r.principle)  # a principle counts as scored only if every order judged was
        if r.rationale:
            notes.setdefault(key, []).append(
                f"[{r.principle}, {r.first} shown first] {r.rationale}"
            )
    texts, pairs = texts_of(run), []
    for (case_id, a, b), bad in sorted(failed.items()):
        pair = Pair(
            case_id,
            a,
            b,
            _text(texts, case_id, a, "pairwise.jsonl"),
            _text(texts, case_id, b, "pairwise.jsonl"),
            "pairwise",
            judge,
            expected=expected,
            rationale="\n".join(notes.get((case_id, a, b), [])),
        )
        for principle in expected:
            cell = combined.get((case_id, a, b, principle))
            if principle not in bad and cell is not None:
                pair.labels[principle] = float(cell["p_a"])
                pair.consistent[principle] = (
                    None if pd.isna(cell["consistent"]) else bool(cell["consistent"])
                )
        pairs.append(pair)
    return pairs


def pointwise_cells(run: RunData, judge: str | None) -> Cells:
    """The judge's scored verdicts by (case, generator, principle): score, normalized, distribution,
    rationale.

    Repeated verdicts on one cell (not expected) are averaged; the first distribution is kept.
    """
    v = (
        run.with_rationale(VERDICTS)[run.with_rationale(VERDICTS)["judge"] == judge]
        if judge is not None
        else run.with_rationale(VERDICTS).iloc[0:0]
    )
    if v.empty:
        return {}
    cells: Cells = {}
    for r in scored(v, run.constitution).itertuples(index=False):
        cell = cells.setdefault(
            (r.case_id, r.generator, r.principle),
            {"scores": [], "norms": [], "distribution": None, "rationale": ""},
        )
        cell["scores"].append(float(r.score))
        cell["norms"].append(float(r.normalized))
        if cell["distribution"] is None:
            cell["distribution"] = r.distribution
        cell["rationale"] = " / ".join(x for x in (cell["rationale"], r.rationale) if x)
    for cell in cells.values():
        cell["score"] = sum(cell["scores"]) / len(cell["scores"])
        cell["normalized"] = sum(cell["norms"]) / len(cell["norms"])
    return cells


def pointwise_pairs(run: RunData, judge: str) -> list[Pair]:
    """Every pair of candidates of every case, labelled from the judge's pointwise verdicts."""
    cells = pointwise_cells(run, judge)
    v = run.with_rationale(VERDICTS)
    expected = _ordered(set(v.loc[v["judge"] == judge, "principle"]), run)
    pairs = []
    for case in run.cases:
        by_gen = {c.generator: c.response for c in case.candidates}
        for a, b in itertools.combinations(sorted(by_gen), 2):
            pair = Pair(case.id, a, b, by_gen[a], by_gen[b], "pointwise", judge, expected=expected)
            for principle in expected:
                x, y = cells.get((case.id, a, principle)), cells.get((case.id, b, principle))
                if x is not None and y is not None:
                    pair.labels[principle] = _p_better(x, y)
            pair.rationale = _point_rationale(cells, case.id, a, b, expected)
            pairs.append(pair)
    return pairs


def _p_better(x: dict[str, Any], y: dict[str, Any]) -> float:
    """P(x better): from the score distributions when both have one, else from the scores (ties
    half).
    """
    dx, dy = x["distribution"], y["distribution"]
    if dx is not None and dy is not None and len(dx) == len(dy):
        return prob_better(list(dx), list(dy))
    return 0.5 if x["score"] == y["score"] else float(x["score"] > y["score"])


def _point_rationale(cells: Cells, case_id: str, a: str, b: str, principles: list[str]) -> str:
    lines = []
    for principle, gen in itertools.product(principles, (a, b)):
        text = cells.get((case_id, gen, principle), {}).get("rationale")
        if text:
            lines.append(f"[{principle}, {gen}] {text}")
    return "\n".join(lines)


def revision_pairs(run: RunData) -> list[Pair]:
    """(revision, original) pairs from revisions.jsonl; an absent file gives none."""
    rows, _ = read_jsonl_tolerant(run.root / REVISIONS)
    texts, cases, pairs = texts_of(run), {c.id for c in run.cases}, []
    for r in rows:
        case_id, gen, reviser = (
            str(r.get("case_id", "")),
            str(r.get("generator", "")),
            str(r.get("reviser", "")),
        )
        original = texts.get(
            (case_id, gen), r.get("original")
        )  # the run's text; the row's copy as a fallback
        principle, p = str(r.get("principle", "")), _probability(r.get("p_revised_better"))
        pairs.append(
            Pair(
                case_id,
                f"{gen}+revision({reviser})",
                gen,
                str(r.get("revision") or ""),
                original or "",
                "revision",
                str(r.get("judge", "")),
                labels={principle: p} if p is not None else {},
                reviser=reviser,
                critique=str(r.get("critique") or ""),
                principle=principle,
                confirmed=r.get("confirmed"),
                failed=r.get("status") not in REVISION_OK
                or original is None
                or case_id not in cases,
            )
        )
    return pairs


def _probability(value: Any) -> float | None:
    """A probability from a JSON value; None for null, NaN or anything that is not a number in [0,
    1].
    """
    try:
        p = float(value)
    except (TypeError, ValueError):
        return None
    return p if 0.0 <= p <= 1.0 else None  # NaN fails both comparisons


def build_pairs(
    run: RunData,
    judge: str | None,
    source: Source | None,
    options: ExportOptions,
    combined_orders: pd.DataFrame | None = None,
) -> list[Pair]:
    """Every candidate pair the export considers: the judge's, then the revisions (unless left out)."""
    pairs: list[Pair] = []
    if judge is not None and source == "pairwise":
        pairs = pairwise_pairs(run, judge, combined_orders)
    elif judge is not None and source == "pointwise":
        pairs = pointwise_pairs(run, judge)
    judged = {p for pair in pairs[:1] for p in pair.expected}
    if (
        options.principle != OVERALL
        and judge is not None
        and pairs
        and options.principle not in judged
    ):
        raise ConfigError(
            f"judge {judge!r} made no {source} judgments on principle {options.principle!r}; "
            f"it judged {', '.join(sorted(judged))}"
        )
    if options.revisions:
        pairs += revision_pairs(run)
    if not pairs:
        raise RunError(
            f"run {run.manifest.run_id}: no scored judgments and no {REVISIONS}: nothing to export"
        )
    return pairs


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


def apply_policies(
    pairs: list[Pair], options: ExportOptions, weights: dict[str, float]
) -> tuple[list[Decision], dict[str, Any]]:
    """Kept pairs, and counts: considered per source, dropped per policy step, kept per source."""
    considered = dict.fromkeys(SOURCES, 0)
    dropped = dict.fromkeys(POLICY_STEPS, 0)
    kept_by = dict.fromkeys(SOURCES, 0)
    kept = []
    for pair in pairs:
        considered[pair.source] += 1
        outcome = evaluate(pair, options, weights)
        if isinstance(outcome, str):
            dropped[outcome] += 1
        else:
            kept.append(outcome)
            kept_by[pair.source] += 1
    counts = {
        "considered": sum(considered.values()),
        "considered_by_source": considered,
        "dropped": dropped,
        "kept": len(kept),
        "kept_by_source": kept_by,
    }
    assert counts["considered"] == sum(dropped.values()) + len(
        kept
    )  # every pair is accounted for once
    return kept, counts
