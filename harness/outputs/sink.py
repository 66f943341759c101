"""Tables written as they are built, a chunk of rows at a time, and the export's progress line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.parquet as pq

LOG_INTERVAL = 15.0  # seconds between progress lines when stderr is not a terminal


class TableSink:
    """One table appended chunk by chunk to its JSONL file, its Parquet file, or both.

    Each chunk becomes one Parquet row group. A table that never gets a row has no row group at
    all, since ``datasets`` fails on an empty one.
    """

    def __init__(self, folder: Path, stem: str, schema: pa.Schema, exts: list[str]):
        self.schema, self.rows = schema, 0
        self.jsonl = (
            (folder / f"{stem}.jsonl").open("w", encoding="utf-8") if "jsonl" in exts else None
        )
        self.parquet = (
            pq.ParquetWriter(folder / f"{stem}.parquet", schema) if "parquet" in exts else None
        )

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Write these rows: JSON keys in column order, missing values as null (never NaN)."""
        if not rows:
            return
        self.rows += len(rows)
        if self.jsonl is not None:
            names = self.schema.names
            self.jsonl.writelines(
                json.dumps({c: row.get(c) for c in names}, ensure_ascii=False, allow_nan=False)
                + "\n"
                for row in rows
            )
        if self.parquet is not None:
            self.parquet.write_table(pa.Table.from_pylist(rows, schema=self.schema))

    def close(self) -> None:
        """Finish both files (a Parquet file is unreadable until its footer is written)."""
        if self.jsonl is not None:
            self.jsonl.close()
        if self.parquet is not None:
            self.parquet.close()


class Progress:
    """``export N/TOTAL items, rate/s, ETA`` on stderr: redrawn in place on a terminal, a line
    every LOG_INTERVAL seconds in a log; nothing when quiet.
    """

    def __init__(self, total: int, quiet: bool, stream: TextIO | None = None):
        self.total, self.done, self.quiet = total, 0, quiet
        self.stream = stream or sys.stderr
        self._tty = self.stream.isatty()
        self.interval = 1.0 if self._tty else LOG_INTERVAL
        self.started = time.monotonic()
        self._last = self.started

    def add(self, n: int) -> None:
        """Count ``n`` more items done; draw when the interval has passed."""
        self.done += n
        now = time.monotonic()
        if not self.quiet and now - self._last >= self.interval:
            self._last = now
            self.stream.write(self.line() + ("\r" if self._tty else "\n"))
            self.stream.flush()

    def line(self) -> str:
        """The status line."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate, left = self.done / elapsed, self.total - self.done
        eta = f"{left / rate:.0f}s" if rate > 0 and left > 0 else "0s"
        return f"export {self.done}/{self.total} items {rate:.0f}/s ETA {eta}"

    def finish(self) -> None:
        """The final line, once the export took long enough to show progress at all."""
        if not self.quiet and self._last > self.started:
            self.stream.write(self.line() + f" | {time.monotonic() - self.started:.1f}s\n")
            self.stream.flush()
