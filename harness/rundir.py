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

import fcntl
import hashlib
import io
import json
import os
import sys
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from harness.errors import RunError
from harness.schema import Case, Constitution, Generation, PairVerdict, RunManifest, Verdict

MANIFEST = "manifest.json"
CONSTITUTION = "constitution.json"
CASES = "cases.jsonl"
VERDICTS = "verdicts.jsonl"
PAIRS = "pairwise.jsonl"
GENERATIONS = "generations.jsonl"
TABLES = "tables"
REPORT = "report.html"
LOCK = ".lock"

Record = Verdict | PairVerdict | Generation
FILES: dict[type[Record], str] = {Verdict: VERDICTS, PairVerdict: PAIRS, Generation: GENERATIONS}
VERDICT_COLUMNS = list(Verdict.model_fields)
PAIR_COLUMNS = list(PairVerdict.model_fields)
# Free text is left out of analysis tables unless asked for: it is most of the bytes.
TEXT_COLUMNS = ("rationale", "raw_output", "reason", "text")
PART_ROWS = 100_000  # log lines per Parquet part: bounds the memory of a conversion
PART_BYTES = 64 << 20  # log bytes per part on the fast (Arrow) path


# --------------------------------------------------------------------------- files


def write_atomic(path: Path, text: str) -> None:
    """Write a file so readers see the old or the new content, never a torn one, even after a crash."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # The rename itself lives in the folder's entry table: without this a power cut can undo it.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class LogScan:
    """What reading a JSONL log found: rows are yielded; these are the counts."""

    corrupt: int = 0  # terminated lines that did not parse (skipped)
    end: int = 0  # byte offset just past the last terminated line


def scan_log(path: Path, start: int = 0, scan: LogScan | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL log from byte ``start``, streamed; skips corrupt lines and a torn last line."""
    scan = scan if scan is not None else LogScan()
    scan.end = start
    if not path.exists():
        return
    with path.open("rb") as fh:
        fh.seek(start)
        for line in fh:
            if not line.endswith(b"\n"):
                break  # a write cut off mid-line: not a row (yet)
            scan.end += len(line)
            try:
                row = json.loads(line)
            except ValueError:
                scan.corrupt += 1
                continue
            if isinstance(row, dict):
                yield row
            else:
                scan.corrupt += 1


def read_jsonl_tolerant(path: Path) -> tuple[list[dict[str, Any]], int]:
    """All rows of a small JSONL file (cases, revisions) and the byte length of its whole lines."""
    scan = LogScan()
    rows = list(scan_log(path, 0, scan))
    return rows, scan.end


def _cut_torn_tail(path: Path) -> None:
    """Cut an unterminated last line (a crashed write) so appends start on a fresh line.

    Only the bytes after the last newline go: terminated rows are never cut, whoever wrote them.
    """
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        back = min(size, 1 << 20)
        while True:
            fh.seek(size - back)
            tail = fh.read(back)
            cut = tail.rfind(b"\n")
            if cut >= 0 or back == size:
                break
            back = min(size, back * 2)
        keep = size - back + cut + 1 if cut >= 0 else 0
        if keep != size:
            fh.truncate(keep)


# --------------------------------------------------------------------------- the writer


class RunLock:
    """An exclusive lock on a run folder, held for the life of the writing process."""

    def __init__(self, root: Path):
        self.path = root / LOCK
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise RunError saying the folder is in use (and by which process)."""
        fh = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise RunError(
                f"{self.path.parent}: this run folder is in use by {holder}; wait for it to "
                "finish, or choose another --run-id or --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"harness process {os.getpid()}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        """Let another process write the folder."""
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


class RunWriter:
    """The single writer of one run folder: lock, fixed inputs, append-only logs, Parquet parts.

    Use it as a context manager (or ``open()`` / ``close()``): opening takes the folder's lock and
    cuts a torn last line off each log; nothing else already written is ever changed.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._lock = RunLock(self.root)
        self._files: dict[str, IO[str]] = {}
        self.unsynced = 0  # log lines appended since the Parquet parts were last brought up to date
        self.corrupt: dict[str, int] = {}  # corrupt lines met in each log (skipped)

    def __enter__(self) -> RunWriter:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> RunWriter:
        """Create the folder if needed, take its lock and repair torn log tails."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        for name in FILES.values():
            _cut_torn_tail(self.root / name)
        for name in SCHEMAS:
            _drop_stale_parts(self.root, name)
        self.sync()
        return self

    @property
    def manifest_path(self) -> Path:
        """Where the manifest lives."""
        return self.root / MANIFEST

    def exists(self) -> bool:
        """True when the folder holds a manifest (a started run)."""
        return self.manifest_path.exists()

    def initialise(
        self, manifest: RunManifest, constitution: Constitution, cases: Iterable[Case]
    ) -> None:
        """Write the fixed inputs of a new run (cases are streamed, not held)."""
        write_atomic(
            self.root / CONSTITUTION, constitution.model_dump_json(indent=2, by_alias=True)
        )
        index: list[dict[str, Any]] = []
        _write_lines_atomic(self.root / CASES, _indexed(cases, index))
        write_case_index(self.root, index)
        self.write_manifest(manifest)

    def write_manifest(self, manifest: RunManifest) -> None:
        """Replace the manifest atomically."""
        write_atomic(self.manifest_path, manifest.model_dump_json(indent=2))

    def append(self, records: Iterable[Record]) -> None:
        """Append records as whole lines, each kind to its own log, flushed at once."""
        lines: dict[str, list[str]] = {}
        for rec in records:
            lines.setdefault(FILES[type(rec)], []).append(rec.model_dump_json())
        for name, chunk in lines.items():
            fh = self._files.get(name)
            if fh is None:
                fh = self._files[name] = (self.root / name).open("a", encoding="utf-8")
            fh.write("\n".join(chunk) + "\n")
            fh.flush()
            self.unsynced += len(chunk)

    def sync(self) -> None:
        """Flush the logs to disk and bring the Parquet parts up to date with them."""
        for fh in self._files.values():
            fh.flush()
            os.fsync(fh.fileno())
        for name in SCHEMAS:
            corrupt = sync_table(self.root, name)
            if corrupt:
                self.corrupt[name] = self.corrupt.get(name, 0) + corrupt
                print(
                    f"warning: {self.root / name}: skipped {corrupt} corrupt line(s); "
                    "the items on them will be judged again",
                    file=sys.stderr,
                )
        self.unsynced = 0

    def close(self) -> None:
        """Flush the logs, bring the Parquet parts up to date, close, and give up the lock."""
        try:
            self.sync()
        finally:
            for fh in self._files.values():
                fh.close()
            self._files.clear()
            self._lock.release()


def _indexed(cases: Iterable[Case], index: list[dict[str, Any]]) -> Iterator[str]:
    """Each case's JSON line, noting its place in the file and what analyses ask of it."""
    offset = 0
    for case in cases:
        line = case.model_dump_json()
        index.append(case_entry(case, offset, len(line.encode("utf-8")) + 1))
        offset += index[-1]["length"]
        yield line


def case_entry(case: Case, offset: int, length: int) -> dict[str, Any]:
    """One row of the case index: where the case's line is, and its small facts."""
    prompt = json.dumps([m.model_dump() for m in case.messages()], ensure_ascii=False)
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


def write_case_index(root: Path, index: list[dict[str, Any]]) -> None:
    """Write ``tables/cases.parquet``: one small row per case, in suite order."""
    (root / TABLES).mkdir(exist_ok=True)
    final = root / TABLES / "cases.parquet"
    tmp = final.with_name(".cases.parquet.tmp")
    pq.write_table(pa.Table.from_pylist(index, CASE_INDEX_SCHEMA), tmp)
    os.replace(tmp, final)


def case_chunks(root: Path, size: int) -> Iterator[list[Case]]:
    """The run's cases in suite order, ``size`` at a time, streamed from ``cases.jsonl``."""
    chunk: list[Case] = []
    for row in scan_log(root / CASES):
        chunk.append(Case.model_validate(row))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


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


def _write_lines_atomic(path: Path, lines: Iterable[str]) -> None:
    """Like write_atomic, for a stream of lines too large to hold as one string."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


# --------------------------------------------------------------------------- columnar tables


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
            _write_table(root, log, table, start, start + cut)
            start += cut
            fh.seek(start)


def _write_part(root: Path, log: str, rows: list[dict[str, Any]], start: int, end: int) -> None:
    schema = SCHEMAS[log]
    table = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema)
    _write_table(root, log, table, start, end)


def _write_table(root: Path, log: str, table: pa.Table, start: int, end: int) -> None:
    # The checksum of the covered bytes lets a later writer notice a log edited under its parts.
    meta = {b"crc32": str(_crc(root / log, start, end)).encode()}
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
    root: Path, log: str, columns: list[str] | None = None, *, latest: bool = True
) -> pd.DataFrame:
    """The latest row per item of a log (every row unless ``latest``), as a table of ``columns``.

    ``columns`` defaults to all but free text.

    Reads the Parquet parts' columns and parses only the log's tail beyond them.
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
    frame = pa.concat_tables(tables).to_pandas()
    if not latest:
        return frame
    return frame.drop_duplicates("item_id", keep="last").reset_index(drop=True)


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


def corrupt_lines(root: Path) -> dict[str, int]:
    """Lines of each log that could not be parsed (skipped by every reader)."""
    found = {}
    for log in FILES.values():
        scan = LogScan()
        for _ in scan_log(root / log, 0, scan):
            pass
        if scan.corrupt:
            found[log] = scan.corrupt
    return found


# --------------------------------------------------------------------------- reading a run


def verdict_frame(verdicts: list[Verdict]) -> pd.DataFrame:
    """Verdicts (objects) as a tidy table with a fixed column order (for small in-memory runs)."""
    frame = pd.DataFrame([v.model_dump() for v in verdicts], columns=VERDICT_COLUMNS)
    keys = ["case_id", "generator", "principle", "judge"]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def pair_frame(pairs: list[PairVerdict]) -> pd.DataFrame:
    """Ordered pairwise judgments (objects) as a tidy table."""
    frame = pd.DataFrame([p.model_dump() for p in pairs], columns=PAIR_COLUMNS)
    keys = ["case_id", "principle", "judge", "first", "second"]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


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
            frame = read_table(self.root, log)
            self._tables[log] = frame.sort_values(keys, kind="stable").reset_index(drop=True)
        return self._tables[log]

    def verdict_rows(self, case_ids: set[str]) -> list[dict[str, Any]]:
        """Whole verdict rows (free text included) of these cases, latest per item."""
        return rows_of_cases(self.root, VERDICTS, case_ids)


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
