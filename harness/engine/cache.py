"""The persistent judge cache: content-addressed by the work item's cache key, shared across runs.

SQLite in WAL mode, so several runs (processes) can read and write at once. Only answers that
yielded a score are stored; failures and unusable answers are never cached, so they are retried next
time.

Writes are buffered and committed in batches (every ``flush_every`` answers or ``flush_after_s``
seconds, and on :meth:`flush` / :meth:`close`): one transaction per answer would cost more CPU than
the HTTP call itself at a thousand calls a second. A crash can lose the last unflushed answers from
the cache only; the run's own verdict log already holds them, so resuming never pays for them twice.

The cache is an optimisation, never a reason to lose paid work: any SQLite fault (database locked,
disk full, a corrupt or unreadable file) becomes one warning on stderr, and the cache then switches
itself off for the rest of the process: reads miss, writes are dropped, the run goes on.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from harness.backends.base import BackendResponse
from harness.paths import cache_dir


def default_cache_path() -> Path:
    """``<user cache>/judge-cache.sqlite3``."""
    return cache_dir() / "judge-cache.sqlite3"


class JudgeCache:
    """Maps cache keys to backend responses; degrades to no cache on any database fault."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        flush_every: int = 256,
        flush_after_s: float = 0.25,
        timeout_s: float = 30.0,
    ):
        self.path = path or default_cache_path()
        self.flush_every, self.flush_after_s = flush_every, flush_after_s
        self._buffer: dict[str, BackendResponse] = {}
        self._oldest = 0.0
        self._db: sqlite3.Connection | None = None
        #: Why the cache switched itself off ("" while it works).
        self.fault = ""
        try:
            self._db = self._open(timeout_s)
        except (sqlite3.Error, OSError) as exc:
            self._disable(exc)

    def _open(self, timeout_s: float) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS responses "
                "(key TEXT PRIMARY KEY, response TEXT NOT NULL, created REAL)"
            )
        except sqlite3.Error:
            db.close()
            raise
        return db

    @property
    def working(self) -> bool:
        """Whether the cache is still in use (False after a fault)."""
        return self._db is not None

    def _disable(self, exc: BaseException) -> None:
        """Warn once, drop the connection and what was buffered, and carry on without a cache."""
        self.fault = f"{type(exc).__name__}: {exc}"
        self._buffer.clear()
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        print(
            f"warning: judge cache {self.path}: {self.fault}; continuing without the cache "
            "(verdicts are still saved in the run folder)",
            file=sys.stderr,
        )

    def get_many(self, keys: list[str]) -> dict[str, BackendResponse]:
        """Cached responses for whichever of ``keys`` are present (none once the cache is off)."""
        self.flush()
        found: dict[str, BackendResponse] = {}
        try:
            for start in range(0, len(keys), 500):
                if self._db is None:
                    return {}
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, response FROM responses WHERE key IN ({marks})", chunk
                ).fetchall()
                for key, text in rows:
                    response = _parse(text)
                    if response is not None:
                        found[key] = response
        except sqlite3.Error as exc:
            self._disable(exc)
            return {}
        return found

    def put_many(self, entries: dict[str, BackendResponse]) -> None:
        """Store responses (buffered; committed in batches)."""
        if not entries or self._db is None:
            return
        if not self._buffer:
            self._oldest = time.monotonic()
        self._buffer.update(entries)
        if (
            len(self._buffer) >= self.flush_every
            or time.monotonic() - self._oldest >= self.flush_after_s
        ):
            self.flush()

    def flush(self) -> None:
        """Commit buffered responses (one transaction); a fault turns the cache off."""
        if not self._buffer or self._db is None:
            return
        now = time.time()
        rows = [(k, r.model_dump_json(), now) for k, r in self._buffer.items()]
        self._buffer.clear()
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self._disable(exc)

    def _rollback(self) -> None:
        if self._db is not None and self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def __len__(self) -> int:
        self.flush()
        if self._db is None:
            return 0
        try:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
        except sqlite3.Error as exc:
            self._disable(exc)
            return 0

    def close(self) -> None:
        """Commit what is buffered and close the database."""
        self.flush()
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None


def _parse(text: str) -> BackendResponse | None:
    """A stored response, or None for a row that no longer reads (treated as a miss)."""
    try:
        return BackendResponse.model_validate_json(text)
    except ValidationError:
        return None
