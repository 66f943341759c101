"""The run folder: the bottom layer every stage writes and reads through.

A run folder holds::

    manifest.json        what was judged, with what (inputs with hashes, versions, seed; never
    secrets)
    constitution.json    the constitution as judged (a snapshot, so the run stands alone)
    cases.jsonl          the suite's cases with their candidates, as judged
    verdicts.jsonl       append-only, one Verdict per line, written as verdicts arrive
    pairwise.jsonl       append-only ordered pairwise judgments (PairVerdict), when pairwise judging
    ran
    generations.jsonl    generated texts (samples, critiques, revisions), when generation ran
    tables/              the logs as Parquet parts, each covering a byte range of its log
    report.html          the self-contained report
    .lock                held (flock) by the one process writing the folder

The JSONL logs are the truth: append-only, so a crash loses at most a torn last line, which the next
writer cuts off (and nothing else). A line that cannot be parsed is skipped and counted, never
allowed to hide the rows after it. The Parquet parts are derived from the logs and only ever cover
whole lines; readers take the parts and parse whatever the logs hold beyond them, so a run still in
progress reads correctly too. Later rows for the same ``item_id`` supersede earlier ones (an error
redone on resume).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from harness.errors import RunError
from harness.records import Case, Constitution, RunManifest
from harness.rundir.cases import (
    CASE_INDEX_SCHEMA,
    case_chunks,
    case_entry,
    read_case_index,
    write_case_index,
)
from harness.rundir.files import (
    CASES,
    CONSTITUTION,
    FILES,
    GENERATIONS,
    LOCK,
    MANIFEST,
    PAIR_COLUMNS,
    PAIRS,
    PART_BYTES,
    PART_ROWS,
    REPORT,
    TABLES,
    TEXT_COLUMNS,
    VERDICT_COLUMNS,
    VERDICTS,
    LogScan,
    Record,
    read_jsonl_tolerant,
    scan_log,
    write_atomic,
)
from harness.rundir.tables import (
    SCHEMAS,
    CaseRows,
    latest_columns,
    latest_status,
    paid_tokens,
    read_records,
    read_table,
    rows_of_cases,
    run_spend,
    status_counts,
    sync_table,
)
from harness.rundir.writer import RunLock, RunWriter

__all__ = [
    "CASES",
    "CASE_INDEX_SCHEMA",
    "CONSTITUTION",
    "FILES",
    "GENERATIONS",
    "LOCK",
    "MANIFEST",
    "PAIRS",
    "PAIR_COLUMNS",
    "PART_BYTES",
    "PART_ROWS",
    "REPORT",
    "SCHEMAS",
    "TABLES",
    "TEXT_COLUMNS",
    "VERDICTS",
    "VERDICT_COLUMNS",
    "CaseRows",
    "LogScan",
    "Record",
    "RunData",
    "RunLock",
    "RunWriter",
    "case_chunks",
    "case_entry",
    "latest_columns",
    "latest_status",
    "paid_tokens",
    "read_case_index",
    "read_jsonl_tolerant",
    "read_records",
    "read_run",
    "read_table",
    "rows_of_cases",
    "run_spend",
    "scan_log",
    "status_counts",
    "sync_table",
    "write_atomic",
    "write_case_index",
]


@dataclass
class RunData:
    """A run folder read back for analysis: manifest, constitution, cases and lazily read tables.

    ``verdicts`` and ``pairs`` hold every column but free text (rationale, raw output, reason);
    :meth:`verdict_rows` fetches whole rows for the few cases a report shows.
    """

    root: Path
    manifest: RunManifest
    constitution: Constitution
    _cases: list[Case] | None = None
    _tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def cases(self) -> list[Case]:
        """Every case as judged (read on first use; large runs should use ``case_index``)."""
        if self._cases is None:
            self._cases = [Case.model_validate(r) for r in scan_log(self.root / CASES)]
        return self._cases

    @property
    def case_index(self) -> pd.DataFrame:
        """One row per case, in suite order: case_id, tags, generators, labelled, prompt_sha."""
        if self._cases is not None:  # cases held in memory (a subset, e.g. per tag)
            rows = [case_entry(c, 0, 0) for c in self._cases]
            return pa.Table.from_pylist(rows, CASE_INDEX_SCHEMA).to_pandas()
        if "cases" not in self._tables:
            self._tables["cases"] = read_case_index(self.root)
        return self._tables["cases"]

    def cases_by_id(self, ids: Iterable[str]) -> list[Case]:
        """These cases, in suite order, read by seeking to their lines (not the whole file)."""
        wanted = set(ids)
        if self._cases is not None:
            return [c for c in self._cases if c.id in wanted]
        index = self.case_index
        rows = index[index["case_id"].isin(wanted)]
        found = []
        with (self.root / CASES).open("rb") as fh:
            for offset, length in zip(rows["offset"], rows["length"], strict=True):
                fh.seek(int(offset))
                found.append(Case.model_validate_json(fh.read(int(length))))
        return found

    def rated_cases(self) -> list[Case]:
        """The cases whose candidates carry human ratings (``human_scores``)."""
        index = self.case_index
        if "rated" not in index:  # an index written before ratings existed
            return [c for c in self.cases if any(x.human_scores for x in c.candidates)]
        return self.cases_by_id(index.loc[index["rated"], "case_id"])

    def labelled_cases(self) -> list[Case]:
        """The cases that carry a human label."""
        index = self.case_index
        return self.cases_by_id(index.loc[index["labelled"], "case_id"])

    @property
    def verdicts(self) -> pd.DataFrame:
        """Pointwise verdicts, latest per item, sorted by case, generator, principle, judge."""
        return self._table(VERDICTS, ["case_id", "generator", "principle", "judge"])

    @property
    def pairs(self) -> pd.DataFrame:
        """Ordered pairwise judgments, latest per item."""
        return self._table(PAIRS, ["case_id", "principle", "judge", "first", "second"])

    def with_rationale(self, log: str) -> pd.DataFrame:
        """A log's latest rows with the judges' rationales (raw output left out), for exports."""
        key = f"{log}+rationale"
        if key not in self._tables:
            cols = [c for c in SCHEMAS[log].names if c not in ("raw_output", "reason")]
            self._tables[key] = read_table(self.root, log, cols)
        return self._tables[key]

    def _table(self, log: str, keys: list[str]) -> pd.DataFrame:
        if log not in self._tables:
            self._tables[log] = read_table(self.root, log, sort=keys)
        return self._tables[log]

    def verdict_rows(self, case_ids: set[str]) -> list[dict[str, Any]]:
        """Whole verdict rows (free text included) of these cases, latest per item."""
        return rows_of_cases(self.root, VERDICTS, case_ids)


def read_run(root: Path | str) -> RunData:
    """Open a run folder for reading; raises RunError naming what is missing or unreadable."""
    root = Path(root)
    if not (root / MANIFEST).exists():
        raise RunError(f"{root}: not a run folder (no {MANIFEST})")
    try:
        manifest = RunManifest.model_validate_json((root / MANIFEST).read_text(encoding="utf-8"))
        text = (root / CONSTITUTION).read_text(encoding="utf-8")
        constitution = Constitution.model_validate_json(text)
    except (OSError, ValueError) as exc:
        raise RunError(f"{root}: unreadable run folder: {exc}") from None
    return RunData(root, manifest, constitution)
