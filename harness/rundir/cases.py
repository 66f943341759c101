"""The case index: one small row per case, in suite order, with where its line is."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from harness.records import Case
from harness.rundir.files import CASES, TABLES, whole_lines


def _indexed(cases: Iterable[tuple[bytes, Case]], index: CaseIndexWriter) -> Iterator[str]:
    """Each case's JSON line, noting its place in the file and what analyses ask of it."""
    offset = 0
    for line, case in cases:
        entry = case_entry(case, offset, len(line) + 1)
        index.append(entry)
        offset += entry["length"]
        yield line.decode("utf-8")


def case_entry(case: Case, offset: int, length: int) -> dict[str, Any]:
    """One row of the case index: where the case's line is, and its small facts."""
    # The same JSON as of each message's model_dump(), without building it through pydantic.
    turns = [{"role": m.role, "content": m.content} for m in case.messages()]
    prompt = json.dumps(turns, ensure_ascii=False)
    return {
        "case_id": case.id,
        "offset": offset,
        "length": length,
        "tags": list(case.tags),
        "generators": [c.generator for c in case.candidates],
        "labelled": case.human_preference is not None,
        "rated": any(c.human_scores for c in case.candidates),
        "prompt_sha": hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16],
    }


CASE_INDEX_SCHEMA = pa.schema(
    [
        ("case_id", pa.string()),
        ("offset", pa.int64()),
        ("length", pa.int64()),
        ("tags", pa.list_(pa.string())),
        ("generators", pa.list_(pa.string())),
        ("labelled", pa.bool_()),
        ("rated", pa.bool_()),
        ("prompt_sha", pa.string()),
    ]
)


class CaseIndexWriter:
    """Writes ``tables/cases.parquet`` a batch of rows at a time: memory stays flat in the suite
    size. The file appears, whole, only on :meth:`close`.
    """

    BATCH = 16_384  # rows held before they go to the file as one row group

    def __init__(self, root: Path):
        (root / TABLES).mkdir(exist_ok=True)
        self.final = root / TABLES / "cases.parquet"
        self.tmp = self.final.with_name(".cases.parquet.tmp")
        self.rows: list[dict[str, Any]] = []
        self._out = pq.ParquetWriter(self.tmp, CASE_INDEX_SCHEMA)

    def append(self, entry: dict[str, Any]) -> None:
        """Add one row (a :func:`case_entry`)."""
        self.rows.append(entry)
        if len(self.rows) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            self._out.write_table(pa.Table.from_pylist(self.rows, CASE_INDEX_SCHEMA))
            self.rows = []

    def close(self) -> None:
        """Write what is left and put the file in place."""
        self._flush()
        self._out.close()
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        """Drop the unfinished file."""
        self._out.close()
        self.tmp.unlink(missing_ok=True)


def write_case_index(root: Path, index: Iterable[dict[str, Any]]) -> None:
    """Write ``tables/cases.parquet``: one small row per case, in suite order."""
    out = CaseIndexWriter(root)
    for entry in index:
        out.append(entry)
    out.close()


def case_chunks(root: Path, size: int) -> Iterator[list[Case]]:
    """The run's cases in suite order, ``size`` at a time, streamed from ``cases.jsonl``.

    Like :func:`scan_log`, a line that is not JSON (or is cut off at the end) is skipped; a JSON
    line that is not a case is an error.
    """
    chunk: list[Case] = []
    for line in whole_lines(root / CASES):
        try:  # JSON straight to a case: half the cost of json.loads, then validating the dict
            chunk.append(Case.model_validate_json(line))
        except ValidationError as exc:
            if not all(_not_a_row(e) for e in exc.errors()):
                raise
            continue
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _not_a_row(error: Any) -> bool:
    """Whether a validation error says the line is not a JSON object at all."""
    return error["type"] == "json_invalid" or (error["type"] == "model_type" and not error["loc"])


def read_case_index(root: Path) -> pd.DataFrame:
    """The case index (built from cases.jsonl for folders written before it existed)."""
    path = root / TABLES / "cases.parquet"
    if path.exists():
        return pq.read_table(path).to_pandas()
    rows, offset = [], 0
    with (root / CASES).open("rb") as fh:
        for line in fh:
            if line.endswith(b"\n"):
                rows.append(case_entry(Case.model_validate_json(line), offset, len(line)))
            offset += len(line)
    return pa.Table.from_pylist(rows, CASE_INDEX_SCHEMA).to_pandas()
