"""Columnar tables of a run folder's logs: Parquet parts that follow the logs, read by column."""

from __future__ import annotations

import io
import os
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from harness.records import JudgeConfig, PairVerdict, Spend, Verdict
from harness.rundir.files import (
    FILES,
    GENERATIONS,
    PAIRS,
    PART_BYTES,
    PART_ROWS,
    TABLES,
    TEXT_COLUMNS,
    VERDICTS,
    LogScan,
    Record,
    scan_log,
)


def _arrow_type(annotation: Any) -> pa.DataType:
    text = str(annotation)
    if "list[float]" in text:
        return pa.list_(pa.float64())
    for name, kind in (("bool", pa.bool_()), ("float", pa.float64()), ("int", pa.int64())):
        if name in text:
            return kind
    return pa.string()


def _schema(model: type[Verdict] | type[PairVerdict]) -> pa.Schema:
    return pa.schema([(n, _arrow_type(f.annotation)) for n, f in model.model_fields.items()])


SCHEMAS = {VERDICTS: _schema(Verdict), PAIRS: _schema(PairVerdict)}


def _parts(root: Path, log: str) -> list[tuple[int, int, Path]]:
    """Parquet parts of a log as (start, end, path), in log order."""
    folder = root / TABLES
    stem = log.removesuffix(".jsonl")
    found = []
    for path in folder.glob(f"{stem}-*.parquet") if folder.exists() else []:
        start, end = path.stem.removeprefix(f"{stem}-").split("-")
        found.append((int(start), int(end), path))
    return sorted(found)


def _covered(root: Path, log: str) -> int:
    parts = _parts(root, log)
    return parts[-1][1] if parts else 0


def _usable(root: Path, log: str) -> tuple[list[Path], int]:
    """Parts a reader may trust (those within the log's current size) and the offset they reach.

    A log cut shorter than its parts (by hand, or a crash test) makes readers fall back to the log.
    """
    path = root / log
    size = path.stat().st_size if path.exists() else 0
    usable, reach = [], 0
    for start, end, part in _parts(root, log):
        # A gap, or a part reaching past the end of the log, means the log changed under the
        # parts: trust nothing from there on and parse the log itself.
        if start != reach or end > size:
            break
        usable.append(part)
        reach = end
    return usable, reach


def sync_table(root: Path, log: str) -> int:
    """Convert the log's whole lines beyond the last part into new parts (writer only).

    Returns the number of corrupt lines met (skipped).
    """
    start = _covered(root, log)
    path = root / log
    if not path.exists() or path.stat().st_size <= start:
        return 0
    (root / TABLES).mkdir(exist_ok=True)
    if _sync_fast(root, log, start):
        return 0
    scan = LogScan()
    rows: list[dict[str, Any]] = []
    part_start = start
    for row in scan_log(path, start, scan):
        rows.append(row)
        if len(rows) >= PART_ROWS:
            _write_part(root, log, rows, part_start, scan.end)
            rows, part_start = [], scan.end
    if rows or scan.end > part_start:
        _write_part(root, log, rows, part_start, scan.end)
    return scan.corrupt


def _sync_fast(root: Path, log: str, start: int) -> bool:
    """Convert whole lines with Arrow's JSON reader (C++), part by part.

    False on any corrupt line: the Python path then converts the rest, skipping and counting them.
    """
    path = root / log
    options = pa_json.ParseOptions(explicit_schema=SCHEMAS[log], unexpected_field_behavior="ignore")
    with path.open("rb") as fh:
        fh.seek(start)
        while True:
            block = fh.read(PART_BYTES)
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                return True  # nothing whole left (a torn tail, or the end)
            try:
                table = pa_json.read_json(io.BytesIO(block[:cut]), parse_options=options)
            except pa.ArrowInvalid:
                return False
            crc = zlib.crc32(memoryview(block)[:cut])  # the bytes at hand, not read again
            _write_table(root, log, table, start, start + cut, crc)
            start += cut
            fh.seek(start)


def _write_part(root: Path, log: str, rows: list[dict[str, Any]], start: int, end: int) -> None:
    schema = SCHEMAS[log]
    table = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema)
    _write_table(root, log, table, start, end)


def _write_table(
    root: Path, log: str, table: pa.Table, start: int, end: int, crc: int | None = None
) -> None:
    # The checksum of the covered bytes lets a later writer notice a log edited under its parts.
    crc = _crc(root / log, start, end) if crc is None else crc
    meta = {b"crc32": str(crc).encode()}
    table = table.select(SCHEMAS[log].names).replace_schema_metadata(meta)
    final = root / TABLES / f"{log.removesuffix('.jsonl')}-{start:012d}-{end:012d}.parquet"
    tmp = final.with_name(f".{final.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, final)


def _crc(path: Path, start: int, end: int) -> int:
    crc = 0
    with path.open("rb") as fh:
        fh.seek(start)
        left = end - start
        while left > 0:
            block = fh.read(min(left, 1 << 22))
            if not block:
                break
            crc = zlib.crc32(block, crc)
            left -= len(block)
    return crc


def _drop_stale_parts(root: Path, log: str) -> None:
    """Delete parts whose bytes no longer match the log (edited or cut by hand), and all after.

    The log is the truth: the dropped range is converted again from it by the next sync.
    """
    path = root / log
    size = path.stat().st_size if path.exists() else 0
    stale = False
    for start, end, part in _parts(root, log):
        if not stale:
            meta = pq.read_schema(part).metadata or {}
            stale = end > size or meta.get(b"crc32") != str(_crc(path, start, end)).encode()
        if stale:
            part.unlink()


def read_table(
    root: Path,
    log: str,
    columns: list[str] | None = None,
    *,
    latest: bool = True,
    sort: list[str] | None = None,
) -> pd.DataFrame:
    """The latest row per item of a log (every row unless ``latest``), as a table of ``columns``,
    in log order or stably sorted by the ``sort`` columns.

    ``columns`` defaults to all but free text.

    Reads the Parquet parts' columns and parses only the log's tail beyond them. Duplicates go and
    rows are sorted in Arrow, before the one conversion to pandas: a pandas sort or hash of a
    million string keys would hold several times the table's memory.
    """
    schema = SCHEMAS[log]
    cols = columns or [n for n in schema.names if n not in TEXT_COLUMNS]
    if latest and "item_id" not in cols:
        cols = ["item_id", *cols]
    parts, reach = _usable(root, log)
    tables = [_read_part(p, schema, cols) for p in parts]
    tail = [{k: r.get(k) for k in cols} for r in scan_log(root / log, reach)]
    if tail:
        tables.append(pa.Table.from_pylist(tail, pa.schema([schema.field(c) for c in cols])))
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype=_pandas_dtype(schema.field(c))) for c in cols})
    table = pa.concat_tables(tables)
    del tables
    # Rows are in log order: an item's last row is its newest (an error redone on resume).
    rows = _latest_rows(table) if latest else None
    if sort:  # a stable sort, on code points like Python's (UTF-8 bytes sort the same way)
        keys = table.select(sort)
        keys = keys if rows is None else keys.take(rows)
        order = pc.sort_indices(keys, [(k, "ascending") for k in sort])
        rows = order if rows is None else rows.take(order)
    held = [table]
    del table  # _to_pandas holds the only reference: each column goes once converted
    return _to_pandas(held, rows)


def _to_pandas(held: list[pa.Table], rows: pa.Array | None) -> pd.DataFrame:
    """The table in ``held`` (taken out of it), its ``rows`` (all: None) as pandas, converted a
    column at a time, each Arrow column let go once converted: the peak is about one table, not
    the three that taking the rows and then converting the whole table would hold.
    """
    table = held.pop()
    out = {}
    for name in table.column_names:
        column = table.column(name)
        out[name] = (column if rows is None else column.take(rows)).to_pandas()
        table = table.drop_columns([name])
        del column
        # The pool keeps what Arrow freed for reuse: pandas needs it back as it grows.
        pa.default_memory_pool().release_unused()
    frame = pd.DataFrame(out)
    del out
    pa.default_memory_pool().release_unused()
    return frame


def _read_part(path: Path, schema: pa.Schema, cols: list[str]) -> pa.Table:
    """A part's columns; a column added to the records since the part was written reads as null."""
    have = set(pq.read_schema(path).names)
    table = pq.read_table(path, columns=[c for c in cols if c in have])
    for c in cols:
        if c not in have:
            table = table.append_column(schema.field(c), pa.nulls(len(table), schema.field(c).type))
    return table.select(cols)


def _pandas_dtype(f: pa.Field) -> str:
    return "float64" if pa.types.is_floating(f.type) else "object"


def latest_status(
    root: Path, logs: Iterable[str] = (VERDICTS, PAIRS, GENERATIONS)
) -> dict[str, str]:
    """The latest status per item id over the logs: what a resume needs to skip."""
    status: dict[str, str] = {}
    for log in logs:
        if log in SCHEMAS:
            frame = read_table(root, log, ["item_id", "status"])
            status.update(zip(frame["item_id"], frame["status"], strict=True))
        else:
            status.update((r["item_id"], r.get("status", "")) for r in scan_log(root / log))
    return status


def read_records(root: Path, log: str) -> dict[str, Record]:
    """The latest record per item of a small log (generations), as objects."""
    model = next(m for m, name in FILES.items() if name == log)
    return {r["item_id"]: model.model_validate(r) for r in scan_log(root / log)}


def rows_of_cases(root: Path, log: str, case_ids: set[str]) -> list[dict[str, Any]]:
    """Whole rows of a log for a few cases, latest per item: filtered column reads, not a scan."""
    wanted = sorted(case_ids)
    latest: dict[str, dict[str, Any]] = {}
    parts, reach = _usable(root, log)
    for path in parts:
        for row in pq.read_table(path, filters=[("case_id", "in", wanted)]).to_pylist():
            latest[row["item_id"]] = row
    for row in scan_log(root / log, reach):
        if row.get("case_id") in case_ids:
            latest[row["item_id"]] = row
    return list(latest.values())


def latest_columns(root: Path, log: str, columns: list[str]) -> pa.Table:
    """The latest row per item of a log, as an Arrow table of a few short columns, in log order.

    For whole-run facts at any size: parts are read a batch at a time, columns other than
    ``item_id`` are dictionary-encoded, and the latest row of an item is found by sorting the ids
    (no Python object per row, no hash table of every id).
    """
    return _latest(_columns(root, log, list(dict.fromkeys(["item_id", *columns]))))


def status_counts(root: Path, log: str) -> dict[str, int]:
    """How many items' latest rows have each status.

    Only an item whose row says ``error`` is ever judged again, so in a log with no error row no
    row is superseded: then the status column alone is counted, without the item ids.
    """
    counts = _tally(_columns(root, log, ["status"])["status"])
    if counts.get("error"):
        counts = _tally(latest_columns(root, log, ["status"])["status"])
    return counts


def _tally(column: pa.ChunkedArray) -> dict[str, int]:
    return {c["values"]: c["counts"] for c in pc.value_counts(column.cast(pa.string())).to_pylist()}


def _columns(root: Path, log: str, cols: list[str]) -> pa.Table:
    """Every row of a log (superseded ones too), as an Arrow table of a few short columns."""
    schema = SCHEMAS[log]
    parts, reach = _usable(root, log)
    pieces = []
    for path in parts:
        if set(cols) <= set(pq.read_schema(path).names):
            batches = pq.ParquetFile(path).iter_batches(batch_size=1 << 16, columns=cols)
            pieces += [_compact(pa.Table.from_batches([b])) for b in batches]
        else:  # a part written before a column existed: it reads as null
            pieces.append(_compact(_read_part(path, schema, cols)))
    tail = [{k: r.get(k) for k in cols} for r in scan_log(root / log, reach)]
    pieces.append(_compact(pa.Table.from_pylist(tail, pa.schema([schema.field(c) for c in cols]))))
    return pa.concat_tables(pieces)


def _compact(table: pa.Table) -> pa.Table:
    """Dictionary-encode every column but the item id (judge, status, principle repeat a lot)."""
    for i, name in enumerate(table.column_names):
        if name != "item_id" and pa.types.is_string(table.schema.field(name).type):
            table = table.set_column(i, name, pc.dictionary_encode(table[name]))
    return table


def _latest(table: pa.Table) -> pa.Table:
    """Drop every row a later row of the same item supersedes."""
    rows = _latest_rows(table)
    return table if rows is None else table.take(rows)


def _latest_rows(table: pa.Table) -> pa.Array | None:
    """Positions of the rows no later row of the same item supersedes, in log order (None: all
    of them, as in a run that never redid an item).
    """
    if len(table) < 2:
        return None
    order = pc.array_sort_indices(table["item_id"])  # stable: an item's rows stay in log order
    ids = table["item_id"].take(order)
    superseded = pc.equal(ids.slice(0, len(ids) - 1), ids.slice(1)).to_numpy(zero_copy_only=False)
    if not superseded.any():
        return None
    keep = np.ones(len(table), dtype=bool)
    keep[order.to_numpy()[:-1][superseded]] = False
    return pa.array(np.flatnonzero(keep))


class CaseRows:
    """A log's latest rows (free text included) for a few cases at a time, in log order.

    Which parts hold which cases is read once (their ``case_id`` column); each call reads only
    the parts holding its cases and keeps the last few read, so cases taken in about the order
    they were judged read each part about once. Memory: a few parts and the unsynced tail of the
    log, never the whole log.
    """

    KEEP = 2  # parts kept read between calls

    def __init__(self, root: Path, log: str, columns: list[str]):
        schema = SCHEMAS[log]
        self.columns = list(dict.fromkeys(["item_id", "case_id", *columns]))
        self.schema = pa.schema([schema.field(c) for c in self.columns])
        self.parts, reach = _usable(root, log)
        # the distinct case ids of each part: a few per part, not one per row
        self.held = [
            pc.unique(pq.read_table(p, columns=["case_id"])["case_id"]) for p in self.parts
        ]
        tail = [{k: r.get(k) for k in self.columns} for r in scan_log(root / log, reach)]
        self.tail = pa.Table.from_pylist(tail, self.schema)
        self._read: OrderedDict[int, pa.Table] = OrderedDict()

    def rows(self, case_ids: Iterable[str]) -> pd.DataFrame:
        """The latest row per item of these cases, in log order."""
        ids = pa.array(sorted(set(case_ids)), pa.string())
        hit = [
            i for i, held in enumerate(self.held) if pc.any(pc.is_in(held, value_set=ids)).as_py()
        ]
        tables = [self._part(i) for i in hit] + [self.tail]
        found = [t.filter(pc.is_in(t["case_id"], value_set=ids)) for t in tables]
        frame = pa.concat_tables(found).to_pandas()
        return frame.drop_duplicates("item_id", keep="last").reset_index(drop=True)

    def _part(self, i: int) -> pa.Table:
        if i not in self._read:
            self._read[i] = _read_part(self.parts[i], self.schema, self.columns)
            while len(self._read) > self.KEEP:
                self._read.popitem(last=False)
        self._read.move_to_end(i)
        return self._read[i]


def paid_tokens(root: Path, logs: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(tokens in, tokens out) per judge over every row of ``logs`` that was not a cache hit.

    Superseded rows count too: an error later redone was still paid for.
    """
    totals: dict[str, list[int]] = {}
    cols = ["judge", "cached", "tokens_in", "tokens_out"]
    for log in logs:
        if log in SCHEMAS:
            frame = read_table(root, log, cols, latest=False)
        else:
            frame = pd.DataFrame([{c: r.get(c) for c in cols} for r in scan_log(root / log)])
        if frame.empty:
            continue
        paid = frame[~frame["cached"].fillna(False).astype(bool)]
        sums = paid.groupby("judge")[["tokens_in", "tokens_out"]].sum()
        for judge, row in sums.iterrows():
            t = totals.setdefault(str(judge), [0, 0])
            t[0] += int(row["tokens_in"])
            t[1] += int(row["tokens_out"])
    return {j: (t[0], t[1]) for j, t in totals.items()}


def run_spend(root: Path, configs: list[JudgeConfig]) -> Spend:
    """Spend of a whole run from its logs: tokens of every paid row × the config's prices.

    Cache hits are free; superseded rows count (an error later redone was still paid for).
    Generated texts (``generations.jsonl``) count as generation spend, apart from judging.
    """
    judged = paid_tokens(root, (VERDICTS, PAIRS))
    generated = paid_tokens(root, (GENERATIONS,))
    judges = {
        c.id: round(c.cost(*judged.get(c.id, (0, 0))), 6) if c.priced else None for c in configs
    }
    by_id = {c.id: c for c in configs}
    generation = round(
        sum(by_id[j].cost(*tokens) for j, tokens in generated.items() if j in by_id), 6
    )
    total = sum(v for v in judges.values() if v is not None) + generation
    return Spend(judges=judges, generation=generation, total=round(total, 6))
