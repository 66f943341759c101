"""The export's input, a chunk of cases at a time: memory follows the chunk, not the run.

What needs the whole run (which judge, which principles it judged, whether it scored anything, how
many pairs there will be) is read up front from columns without free text. Then each chunk reads
its cases from ``cases.jsonl`` (by seeking, or in file order) and the judge's rows for those cases
only, rationales included (:class:`harness.rundir.CaseRows`).

Pairs come out in the order the whole-run export always used: pairwise pairs sorted by (case, a, b),
pointwise pairs in suite order, then revisions in file order; candidates in suite order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness.analysis.pairwise import combine_orders
from harness.errors import ConfigError, RunError
from harness.outputs.pairs import (
    Cells,
    ordered,
    pairwise_pairs,
    pointwise_cells,
    pointwise_pairs,
    revision_pairs,
    texts_of,
)
from harness.outputs.preferences import (
    OVERALL,
    REVISIONS,
    ExportOptions,
    Pair,
    Source,
    check_principle,
    select,
)
from harness.records import Case
from harness.rundir import (
    CASES,
    PAIRS,
    SCHEMAS,
    TABLES,
    VERDICTS,
    CaseRows,
    RunData,
    case_chunks,
    latest_columns,
    scan_log,
)

CHUNK_CASES = 2000  # cases per chunk: bounds the rows, texts and pairs held at once


@dataclass
class Plan:
    """The whole-run facts the export needs, from columns without free text."""

    judge: str | None
    source: Source | None
    expected: list[str]  # principles the judge judged: a pair should have a label on each
    with_scores: bool  # the judge scored something pointwise (scores go into every row)
    pair_cases: list[str]  # pairwise: the cases the judge compared, sorted (the output order)
    judge_pairs: bool  # the judge's judgments give at least one pair
    revisions: int  # rows of revisions.jsonl the export considers
    cases: int  # cases in the run


def make_plan(run: RunData, options: ExportOptions) -> Plan:
    """Choose the judge and source and check the options against them; errors name the choices."""
    check_principle(run, options.principle)
    verdicts = latest_columns(run.root, VERDICTS, ["judge", "status", "principle"])
    pairs = latest_columns(run.root, PAIRS, ["judge", "status", "principle", "case_id"])
    judge, source = select(run, options, verdicts, pairs)
    mine = verdicts.filter(pc.equal(verdicts["judge"], judge)) if judge else verdicts.slice(0, 0)
    with_scores = bool(pc.any(pc.equal(mine["status"], "scored")).as_py())
    pair_cases: list[str] = []
    if source == "pairwise":
        mine = pairs.filter(pc.equal(pairs["judge"], judge))
        pair_cases = sorted(str(c) for c in pc.unique(mine["case_id"]).to_pylist())
    principles = {str(p) for p in pc.unique(mine["principle"]).to_pylist()}
    del verdicts, pairs
    n_cases, any_pair = _case_facts(run)
    has_pairs = bool(pair_cases) if source == "pairwise" else source == "pointwise" and any_pair
    plan = Plan(
        judge, source, ordered(principles, run.constitution), with_scores, pair_cases,
        has_pairs, 0, n_cases,
    )  # fmt: skip
    _check_judged(plan, options)
    plan.revisions = sum(1 for _ in scan_log(run.root / REVISIONS)) if options.revisions else 0
    if not plan.judge_pairs and not plan.revisions:
        raise RunError(
            f"run {run.manifest.run_id}: no scored judgments and no {REVISIONS}: nothing to export"
        )
    return plan


def _case_facts(run: RunData) -> tuple[int, bool]:
    """How many cases the run has, and whether any has two distinct candidates (so a pair)."""
    path = run.root / TABLES / "cases.parquet"
    if not path.exists():  # a folder written before the case index: build it
        index = run.case_index
        return len(index), any(len(set(g)) > 1 for g in index["generators"])
    file = pq.ParquetFile(path)
    batches = file.iter_batches(batch_size=1 << 14, columns=["generators"])
    gens = (g for batch in batches for g in batch.column(0).to_pylist())
    return file.metadata.num_rows, any(len(set(g or [])) > 1 for g in gens)


def _check_judged(plan: Plan, options: ExportOptions) -> None:
    """--principle ID needs the judge to have judged that principle."""
    if options.principle != OVERALL and plan.judge_pairs and options.principle not in plan.expected:
        raise ConfigError(
            f"judge {plan.judge!r} made no {plan.source} judgments on principle "
            f"{options.principle!r}; it judged {', '.join(sorted(plan.expected))}"
        )


def _columns(log: str) -> list[str]:
    """A log's columns an export reads: all but the raw judge output and the error reason."""
    return [c for c in SCHEMAS[log].names if c not in ("raw_output", "reason")]


@dataclass
class Chunk:
    """One chunk's cases and the judge's data on them."""

    cases: list[Case]
    pairs: list[Pair]
    cells: Cells  # the judge's pointwise cells ({} when it scored nothing pointwise)
    combined: pd.DataFrame | None  # the judge's pairwise judgments over orders (pairwise only)
    items: int = 0  # what progress counts: cases, or rows of revisions.jsonl

    def __post_init__(self) -> None:
        self.items = self.items or len(self.cases)


class ChunkReader:
    """Reads cases, and the judge's rows with rationales, for a few cases at a time."""

    def __init__(self, run: RunData, plan: Plan):
        self.run, self.plan = run, plan
        self._where: pd.DataFrame | None = None
        self.verdicts = CaseRows(run.root, VERDICTS, _columns(VERDICTS))
        self.pairs = (
            CaseRows(run.root, PAIRS, _columns(PAIRS)) if plan.source == "pairwise" else None
        )

    def cases(self, ids: list[str]) -> list[Case]:
        """These cases, in suite order, read by seeking to their lines in cases.jsonl."""
        if self._where is None:  # where each case's line is: three short columns
            path = self.run.root / TABLES / "cases.parquet"
            cols = ["case_id", "offset", "length"]
            index = pq.read_table(path, columns=cols).to_pandas() if path.exists() else None
            self._where = (index if index is not None else self.run.case_index[cols]).set_index(
                "case_id"
            )
        rows = self._where[self._where.index.isin(ids)]
        found = []
        with (self.run.root / CASES).open("rb") as fh:
            for offset, length in zip(rows["offset"], rows["length"], strict=True):
                fh.seek(int(offset))
                found.append(Case.model_validate_json(fh.read(int(length))))
        return found

    def cells(self, ids: list[str]) -> Cells:
        """The judge's pointwise cells of these cases."""
        if not self.plan.with_scores:
            return {}
        rows = self.verdicts.rows(ids)
        return pointwise_cells(rows[rows["judge"] == self.plan.judge], self.run.constitution)

    def pair_rows(self, ids: list[str]) -> pd.DataFrame:
        """The judge's ordered pairwise judgments of these cases, in log order."""
        assert self.pairs is not None
        rows = self.pairs.rows(ids)
        return rows[rows["judge"] == self.plan.judge]

    def chunk(self, cases: list[Case], pairwise: bool) -> Chunk:
        """These cases with the judge's cells, and its combined pairwise judgments if asked."""
        ids = [c.id for c in cases]
        combined = combine_orders(self.pair_rows(ids)) if pairwise else None
        return Chunk(cases, [], self.cells(ids), combined)


def pair_chunks(run: RunData, plan: Plan, reader: ChunkReader, size: int) -> Iterator[Chunk]:
    """The chunks of pairs the judge's judgments give, in output order."""
    judge = plan.judge
    if judge is None or not plan.judge_pairs:
        return
    if plan.source == "pairwise":
        for ids in _batches(plan.pair_cases, size):
            # judgments whose case cases.jsonl lacks still make pairs (and then an error)
            cases = reader.cases(ids)
            rows = reader.pair_rows(ids)
            chunk = Chunk(cases, [], reader.cells(ids), None, len(ids))
            chunk.pairs = pairwise_pairs(
                rows, combine_orders(rows), judge, plan.expected, texts_of(cases)
            )
            yield chunk
    else:
        for cases in case_chunks(run.root, size):
            chunk = reader.chunk(cases, pairwise=False)
            chunk.pairs = pointwise_pairs(cases, chunk.cells, judge, plan.expected)
            yield chunk


def revision_chunks(run: RunData, reader: ChunkReader, size: int) -> Iterator[Chunk]:
    """The (revision, original) pairs of revisions.jsonl, ``size`` rows at a time."""
    for rows in _batches(scan_log(run.root / REVISIONS), size):
        ids = sorted({str(r.get("case_id", "")) for r in rows})
        cases = reader.cases(ids)
        yield Chunk(cases, revision_pairs(rows, cases), reader.cells(ids), None, len(rows))


def candidate_chunks(run: RunData, plan: Plan, reader: ChunkReader, size: int) -> Iterator[Chunk]:
    """Every case in suite order, with the judge's cells and combined pairwise judgments."""
    for cases in case_chunks(run.root, size):
        yield reader.chunk(cases, pairwise=plan.source == "pairwise")


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch
