"""A DuckDB index of one run folder's JSONL logs, kept in the user cache and grown incrementally.

The run folder is never written. The index lives in ``<cache>/view/<name>-<hash>.duckdb`` and
remembers, per log, the byte offset it has read up to, the file's inode and a hash of the bytes just
before that offset. A refresh reads only what was appended since (whole lines; a torn last line
waits for its newline), in bounded chunks parsed by DuckDB's JSON reader. A log that was replaced or
cut short (another inode, a shorter file, other bytes before the offset) is read again from the
start.

Later verdict rows for the same ``item_id`` supersede earlier ones; corrupt lines are skipped and
counted. Memory stays bounded: rows go from the file to DuckDB a chunk at a time, never through
Python objects, and DuckDB runs under a memory limit.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from harness.paths import cache_dir

SCHEMA_VERSION = 3
CHUNK_BYTES = 32 << 20  # bytes of log parsed at a time: bounds the memory of an ingest
TAIL_BYTES = 256  # bytes before the offset whose hash tells an append from a rewrite
LOGS = ("cases.jsonl", "verdicts.jsonl", "pairwise.jsonl")

_VERDICT_COLS = {
    "item_id": "VARCHAR", "case_id": "VARCHAR", "generator": "VARCHAR", "principle": "VARCHAR",
    "judge": "VARCHAR", "status": "VARCHAR", "score": "DOUBLE", "normalized": "DOUBLE",
    "passed": "BOOLEAN", "rationale": "VARCHAR", "raw_output": "VARCHAR", "reason": "VARCHAR",
    "tokens_in": "BIGINT", "tokens_out": "BIGINT", "latency_s": "DOUBLE", "cached": "BOOLEAN",
    "attempts": "BIGINT",
}  # fmt: skip
_PAIR_COLS = {
    "item_id": "VARCHAR", "case_id": "VARCHAR", "principle": "VARCHAR", "judge": "VARCHAR",
    "first": "VARCHAR", "second": "VARCHAR", "status": "VARCHAR", "p_first": "DOUBLE",
    "winner": "VARCHAR", "rationale": "VARCHAR", "reason": "VARCHAR",
}  # fmt: skip
_CASE_COLS = {
    "id": "VARCHAR", "prompt": "JSON", "tags": "VARCHAR[]", "reference": "VARCHAR",
    "candidates": "STRUCT(generator VARCHAR, response VARCHAR)[]", "human_preference": "JSON",
}  # fmt: skip
_REQUIRED = {
    "verdicts.jsonl": ("item_id", "case_id", "generator", "principle", "judge", "status"),
    "pairwise.jsonl": ("item_id", "case_id", "principle", "judge", "first", "second", "status"),
    "cases.jsonl": ("id",),
}


def _ddl() -> list[str]:
    def cols(spec: dict[str, str]) -> str:
        return ", ".join(f'"{k}" {v}' for k, v in spec.items())

    return [
        "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
        "CREATE TABLE IF NOT EXISTS logs (log VARCHAR PRIMARY KEY, ino BIGINT, "
        "offset_ BIGINT, tail VARCHAR, corrupt BIGINT)",
        "CREATE TABLE IF NOT EXISTS verdicts "
        f"(seq BIGINT, {cols(_VERDICT_COLS)}, note_lc VARCHAR, cg UBIGINT)",
        f"CREATE TABLE IF NOT EXISTS pairs (seq BIGINT, {cols(_PAIR_COLS)})",
        "CREATE TABLE IF NOT EXISTS cases (seq BIGINT, case_id VARCHAR, prompt VARCHAR, "
        "prompt_text VARCHAR, tags VARCHAR[], reference VARCHAR, human_preference VARCHAR)",
        "CREATE TABLE IF NOT EXISTS responses (case_id VARCHAR, generator VARCHAR, "
        "response VARCHAR, haystack VARCHAR, cg UBIGINT)",
    ]


@dataclass
class LogState:
    """How far the index has read one log."""

    ino: int = 0
    offset: int = 0
    tail: str = ""
    corrupt: int = 0


def index_path(root: Path) -> Path:
    """Where the index of run folder ``root`` lives (never inside the run folder)."""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:20]
    return cache_dir() / "view" / f"{root.resolve().name[:40]}-{key}.duckdb"


def _tail_hash(fh: io.BufferedReader, offset: int) -> str:
    start = max(0, offset - TAIL_BYTES)
    fh.seek(start)
    return hashlib.sha256(fh.read(offset - start)).hexdigest()[:16]


def _whole_lines(fh: io.BufferedReader, offset: int, size: int) -> bytes:
    """The whole lines from ``offset``, at most about CHUNK_BYTES (more if one line is longer)."""
    want = CHUNK_BYTES
    while True:
        fh.seek(offset)
        data = fh.read(min(want, size - offset))
        cut = data.rfind(b"\n")
        if cut >= 0:
            return data[: cut + 1]
        if offset + len(data) >= size:
            return b""  # only a torn (still being written) line
        want *= 2


class RunIndex:
    """The queryable index of one run folder; ``refresh()`` brings it up to date with the logs."""

    def __init__(self, root: Path, memory_limit: str = "512MB", threads: int = 2):
        self.root = root
        self.lock = threading.RLock()
        self.generation = 0  # bumped whenever a refresh adds rows
        self.searched: tuple[str, int] | None = None  # (text, generation) held in temp table hits
        self._tmp: Path | None = None
        self.con = self._connect(index_path(root))
        self.con.execute(f"SET memory_limit='{memory_limit}'")
        self.con.execute(f"SET threads={int(threads)}")
        self._prepare()

    def _connect(self, path: Path) -> duckdb.DuckDBPyConnection:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return duckdb.connect(str(path))
        except duckdb.Error:
            # Another viewer holds this index: build a private one for this process.
            fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".duckdb", dir=path.parent)
            os.close(fd)
            os.unlink(tmp)
            self._tmp = Path(tmp)
            return duckdb.connect(tmp)

    def _prepare(self) -> None:
        for stmt in _ddl():
            self.con.execute(stmt)
        row = self.one("SELECT value FROM meta WHERE key = 'version'")
        if row is None or row[0] != str(SCHEMA_VERSION):
            self._reset_all()

    def _reset_all(self) -> None:
        for table in ("meta", "logs", "verdicts", "pairs", "cases", "responses"):
            self.con.execute(f"DROP TABLE IF EXISTS {table}")
        for stmt in _ddl():
            self.con.execute(stmt)
        self.con.execute("INSERT INTO meta VALUES ('version', ?), ('root', ?)",
                         [str(SCHEMA_VERSION), str(self.root.resolve())])  # fmt: skip

    def close(self) -> None:
        """Close the database (and drop a private copy)."""
        with self.lock:
            self.con.close()
            if self._tmp is not None:
                for p in (self._tmp, self._tmp.with_name(self._tmp.name + ".wal")):
                    with contextlib.suppress(OSError):
                        p.unlink()

    # ------------------------------------------------------------------ refresh

    def state(self, log: str) -> LogState:
        """How far ``log`` has been read."""
        row = self.one("SELECT ino, offset_, tail, corrupt FROM logs WHERE log = ?", [log])
        return LogState(*row) if row else LogState()

    def refresh(self) -> int:
        """Read what the logs gained since the last refresh; returns the number of new lines."""
        with self.lock:
            added = sum(self._refresh_log(log) for log in LOGS)
            if added:
                self.generation += 1
            return added

    def _refresh_log(self, log: str) -> int:
        path = self.root / log
        state = self.state(log)
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            if state.offset:
                self._clear(log)
            return 0
        with fh:
            st = os.fstat(fh.fileno())
            if state.offset and (
                st.st_ino != state.ino
                or st.st_size < state.offset
                or _tail_hash(fh, state.offset) != state.tail
            ):
                self._clear(log)  # replaced or rewritten: read it again from the start
                state = LogState()
            return self._ingest(log, fh, st.st_ino, st.st_size, state)

    def _ingest(self, log: str, fh: io.BufferedReader, ino: int, size: int, state: LogState) -> int:
        added = 0
        offset = state.offset
        while offset < size:
            data = _whole_lines(fh, offset, size)
            if not data:
                break
            good, lines = self._load_chunk(log, data)
            state.corrupt += lines - good
            added += lines
            offset += len(data)
        if added or state.offset == 0:
            self.con.execute(
                "INSERT OR REPLACE INTO logs VALUES (?, ?, ?, ?, ?)",
                [log, ino, offset, _tail_hash(fh, offset), state.corrupt],
            )
        return added

    def _clear(self, log: str) -> None:
        tables = {"cases.jsonl": ("cases", "responses"), "verdicts.jsonl": ("verdicts",),
                  "pairwise.jsonl": ("pairs",)}[log]  # fmt: skip
        for table in tables:
            self.con.execute(f"DELETE FROM {table}")
        self.con.execute("DELETE FROM logs WHERE log = ?", [log])

    def _load_chunk(self, log: str, data: bytes) -> tuple[int, int]:
        """Parse one chunk of whole lines into its tables; returns (good rows, lines)."""
        spec = {"cases.jsonl": _CASE_COLS, "verdicts.jsonl": _VERDICT_COLS,
                "pairwise.jsonl": _PAIR_COLS}[log]  # fmt: skip
        lines = data.count(b"\n")
        rel = self.con.read_json(
            io.BytesIO(data), format="newline_delimited", columns=spec, ignore_errors=True
        )
        self.con.register("chunk", rel)
        ok = " AND ".join(f'"{c}" IS NOT NULL' for c in _REQUIRED[log])
        self.con.execute("BEGIN")
        try:
            # row_number over the reader's order (DuckDB keeps a scan's insertion order) is the
            # line's position, so a later line for the same item supersedes an earlier one.
            self.con.execute(
                "CREATE OR REPLACE TEMP TABLE stage AS SELECT * FROM ("
                f"SELECT row_number() OVER () + ? AS seq, * FROM chunk) WHERE {ok}",
                [self._next_seq()],
            )
            good = self._merge(log)
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        return good, lines

    def _next_seq(self) -> int:
        row = self.one("SELECT value FROM meta WHERE key = 'seq'")
        return int(row[0]) if row else 0

    def _merge(self, log: str) -> int:
        good = self.one("SELECT count(*), coalesce(max(seq), 0) FROM stage")
        assert good is not None
        self.con.execute("INSERT OR REPLACE INTO meta VALUES ('seq', ?)",
                         [str(max(good[1], self._next_seq()))])  # fmt: skip
        if log == "cases.jsonl":
            self._merge_cases()
        else:
            table = "verdicts" if log == "verdicts.jsonl" else "pairs"
            self.con.execute(
                "CREATE OR REPLACE TEMP TABLE stage AS SELECT * FROM stage "
                "QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY seq DESC) = 1"
            )
            self.con.execute(f"DELETE FROM {table} WHERE item_id IN (SELECT item_id FROM stage)")
            # Lower-cased copies of the searchable text: a plain substring scan is twice as fast
            # as ILIKE, and searching is what has to answer within a second at a million rows.
            # cg: one integer for (case, generator), so a search joins responses on a number.
            note = (
                ", lower(concat_ws(chr(10), case_id, rationale, reason)), hash(case_id, generator)"
                if table == "verdicts"
                else ""
            )
            self.con.execute(f"INSERT INTO {table} SELECT *{note} FROM stage")
        return int(good[0])

    def _merge_cases(self) -> None:
        self.con.execute("DELETE FROM cases WHERE case_id IN (SELECT id FROM stage)")
        self.con.execute("DELETE FROM responses WHERE case_id IN (SELECT id FROM stage)")
        self.con.execute(
            "INSERT INTO cases SELECT seq, id, CAST(prompt AS VARCHAR), "
            "CASE WHEN json_type(prompt) = 'VARCHAR' THEN prompt ->> '$' ELSE "
            "array_to_string(list_transform("
            "CAST(prompt AS STRUCT(role VARCHAR, content VARCHAR)[]), lambda m: m.content), "
            "chr(10)) END, "
            "coalesce(tags, []), reference, CAST(human_preference AS VARCHAR) FROM stage"
        )
        self.con.execute(
            "INSERT INTO responses SELECT r.id, r.c.generator, r.c.response, "
            "lower(concat_ws(chr(10), r.id, k.prompt_text, r.c.response)), "
            "hash(r.id, r.c.generator) "
            "FROM (SELECT id, unnest(candidates) AS c FROM stage) r "
            "JOIN cases k ON k.case_id = r.id"
        )

    # ------------------------------------------------------------------ reads

    def one(self, sql: str, params: list[Any] | None = None) -> tuple[Any, ...] | None:
        """The first row of a query (the result is read to its end, as DuckDB requires)."""
        with self.lock:
            rows = self.con.execute(sql, params or []).fetchall()
        return rows[0] if rows else None

    def fetch(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Rows of a query as dicts (for small results: a page, a case)."""
        with self.lock:
            cur = self.con.execute(sql, params or [])
            names = [d[0] for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
