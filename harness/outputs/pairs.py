"""Candidate pairs of one chunk of cases: the judge's pairwise or pointwise labels, and revisions.

Each builder sees only its chunk: the chunk's cases and the judge's rows for them (free text
included), read by :mod:`harness.outputs.chunks`. A pair depends on its own case alone, so pairs
built chunk by chunk are the pairs built from the whole run, in the same order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import pandas as pd

from harness.analysis.pairwise import prob_better
from harness.analysis.scores import scored
from harness.errors import RunError
from harness.outputs.preferences import REVISION_OK, Pair
from harness.records import Case, Constitution

Cells = dict[tuple[str, ...], dict[str, Any]]
Texts = dict[tuple[str, str], str]


def texts_of(cases: Iterable[Case]) -> Texts:
    """Response text by (case id, generator)."""
    return {(c.id, cand.generator): cand.response for c in cases for cand in c.candidates}


def _text(texts: Texts, case_id: str, gen: str, table: str) -> str:
    try:
        return texts[(case_id, gen)]
    except KeyError:
        raise RunError(
            f"{table} names candidate {gen!r} of case {case_id!r}, which cases.jsonl lacks"
        ) from None


def ordered(principles: set[str], constitution: Constitution) -> list[str]:
    """Principles in constitution order (then any others by name)."""
    known = [p.id for p in constitution.principles]
    return [p for p in known if p in principles] + sorted(principles - set(known))


def pairwise_pairs(
    rows: pd.DataFrame, combined: pd.DataFrame, judge: str, expected: list[str], texts: Texts
) -> list[Pair]:
    """One pair per (case, a, b) in ``rows`` (the judge's ordered judgments), whatever their status.

    ``combined`` is ``combine_orders(rows)``; pairs come sorted by (case, a, b).
    """
    cells: Cells = combined.set_index(["case_id", "a", "b", "principle"]).to_dict("index")
    failed: dict[tuple[str, str, str], set[str]] = {}
    notes: dict[tuple[str, str, str], list[str]] = {}
    for r in rows.itertuples(index=False):  # one pass: a groupby per pair is far slower
        key = (r.case_id, *sorted((r.first, r.second)))
        bad = failed.setdefault(key, set())
        if r.status != "scored":
            bad.add(r.principle)  # a principle counts as scored only if every order judged was
        if r.rationale:
            notes.setdefault(key, []).append(
                f"[{r.principle}, {r.first} shown first] {r.rationale}"
            )
    pairs = []
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
            cell = cells.get((case_id, a, b, principle))
            if principle not in bad and cell is not None:
                pair.labels[principle] = float(cell["p_a"])
                pair.consistent[principle] = (
                    None if pd.isna(cell["consistent"]) else bool(cell["consistent"])
                )
        pairs.append(pair)
    return pairs


def pointwise_cells(verdicts: pd.DataFrame, constitution: Constitution) -> Cells:
    """The judge's scored verdicts (``verdicts``: its rows, in log order) by (case, generator,
    principle): score, normalized, distribution, rationale.

    Repeated verdicts on one cell (not expected) are averaged; the first distribution is kept.
    """
    if verdicts.empty:
        return {}
    cells: Cells = {}
    for r in scored(verdicts, constitution).itertuples(index=False):
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


def pointwise_pairs(cases: list[Case], cells: Cells, judge: str, expected: list[str]) -> list[Pair]:
    """Every pair of candidates of these cases, labelled from the judge's pointwise verdicts."""
    pairs = []
    for case in cases:
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


def revision_pairs(rows: list[dict[str, Any]], cases: list[Case]) -> list[Pair]:
    """(revision, original) pairs from rows of revisions.jsonl; ``cases``: those the rows name."""
    texts, known = texts_of(cases), {c.id for c in cases}
    return [_revision_pair(r, texts, known) for r in rows]


def _revision_pair(r: dict[str, Any], texts: Texts, known: set[str]) -> Pair:
    case_id, gen, reviser = (
        str(r.get("case_id", "")),
        str(r.get("generator", "")),
        str(r.get("reviser", "")),
    )
    # the run's text; the row's copy as a fallback
    original = texts.get((case_id, gen), r.get("original"))
    principle, p = str(r.get("principle", "")), _probability(r.get("p_revised_better"))
    return Pair(
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
        failed=r.get("status") not in REVISION_OK or original is None or case_id not in known,
    )


def _probability(value: Any) -> float | None:
    """A probability from a JSON value; None for null, NaN or anything that is not a number in [0,
    1].
    """
    try:
        p = float(value)
    except (TypeError, ValueError):
        return None
    return p if 0.0 <= p <= 1.0 else None  # NaN fails both comparisons
