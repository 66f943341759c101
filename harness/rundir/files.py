"""File names of a run folder, atomic writes, and tolerant reading of its append-only logs."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.records import Generation, PairVerdict, Verdict

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


def write_atomic(path: Path, text: str) -> None:
    """Write a file so readers see the old or the new content, never a torn one, even after a crash."""
    _replace_atomic(path, [text])


def _write_lines_atomic(path: Path, lines: Iterable[str]) -> None:
    """Like write_atomic, for a stream of lines too large to hold as one string."""
    _replace_atomic(path, (line + "\n" for line in lines))


def _replace_atomic(path: Path, pieces: Iterable[str]) -> None:
    """Write ``pieces`` to a unique temporary file, fsync it, rename it over ``path``, fsync the
    folder.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for piece in pieces:
                fh.write(piece)
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


def whole_lines(path: Path, start: int = 0) -> Iterator[bytes]:
    """A file's lines from byte ``start`` that end in a newline, streamed: a write cut off mid-line
    is not a line (yet). A missing file has none.
    """
    if not path.exists():
        return
    with path.open("rb") as fh:
        fh.seek(start)
        for line in fh:
            if not line.endswith(b"\n"):
                return
            yield line


def scan_log(path: Path, start: int = 0, scan: LogScan | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL log from byte ``start``, streamed; skips corrupt lines and a torn last line."""
    scan = scan if scan is not None else LogScan()
    scan.end = start
    for line in whole_lines(path, start):
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
