"""The single writer of a run folder: its lock, fixed inputs, append-only logs and Parquet parts."""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from harness.errors import RunError
from harness.records import Case, Constitution, RunManifest
from harness.rundir.cases import CaseIndexWriter, _indexed
from harness.rundir.files import (
    CASES,
    CONSTITUTION,
    FILES,
    LOCK,
    MANIFEST,
    Record,
    _cut_torn_tail,
    _write_lines_atomic,
    write_atomic,
)
from harness.rundir.tables import SCHEMAS, _drop_stale_parts, sync_table


class RunLock:
    """An exclusive lock on a run folder, held for the life of the writing process."""

    def __init__(self, root: Path):
        self.path = root / LOCK
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise RunError saying the folder is in use (and by which process)."""
        # "a+" so opening never truncates the holder's note before we know we hold the lock; flock
        # (not a lock file's existence) so a crashed holder releases it with its last descriptor.
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
        # The lock comes first: repairs below must never race another writer's appends.
        self._lock.acquire()
        for name in FILES.values():
            _cut_torn_tail(self.root / name)
        for name in SCHEMAS:
            _drop_stale_parts(self.root, name)
        # Converting what the last writer left unconverted counts (and reports) corrupt lines now,
        # before anything new is appended after them.
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
        """Write the fixed inputs of a new run (cases are streamed, not held), then its manifest."""
        self.write_inputs(constitution, ((c.model_dump_json().encode(), c) for c in cases))
        self.write_manifest(manifest)

    def write_inputs(self, constitution: Constitution, cases: Iterable[tuple[bytes, Case]]) -> None:
        """Write the constitution, the cases (each with its JSON line, no newline) and the case
        index; the manifest, written after them, is what makes the folder a run.
        """
        write_atomic(
            self.root / CONSTITUTION, constitution.model_dump_json(indent=2, by_alias=True)
        )
        index = CaseIndexWriter(self.root)
        try:
            _write_lines_atomic(self.root / CASES, _indexed(cases, index))
        except BaseException:
            index.abort()
            raise
        index.close()

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
