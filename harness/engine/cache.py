"""The persistent judge cache: content-addressed by the work item's cache key, shared across runs.

SQLite in WAL mode, so several runs (processes) can read and write at once. Only answers that yielded a
score are stored; failures and unusable answers are never cached, so they are retried next time.

Writes are buffered and committed in batches (every ``flush_every`` answers or ``flush_after_s`` seconds,
and on :meth:`flush` / :meth:`close`): one transaction per answer would cost more CPU than the HTTP call
itself at a thousand calls a second. A crash can lose the last unflushed answers from the cache only; the
run's own verdict log already holds them, so resuming never pays for them twice.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from harness.backends.base import BackendResponse
from harness.paths import cache_dir


def default_cache_path() -> Path:
    """``<user cache>/judge-cache.sqlite3``."""
    return cache_dir() / "judge-cache.sqlite3"


class JudgeCache:
    """Maps cache keys to backend responses."""

    def __init__(
        self, path: Path | None = None, *, flush_every: int = 256, flush_after_s: float = 0.25
    ):
        self.path = path or default_cache_path()
        self.flush_every, self.flush_after_s = flush_every, flush_after_s
        self._buffer: dict[str, BackendResponse] = {}
        self._oldest = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL, created REAL)"
        )

    def get_many(self, keys: list[str]) -> dict[str, BackendResponse]:
        """Cached responses for whichever of ``keys`` are present."""
        self.flush()
        found: dict[str, BackendResponse] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, response FROM responses WHERE key IN ({marks})", chunk
            )
            found.update({k: BackendResponse.model_validate_json(r) for k, r in rows})
        return found

    def put_many(self, entries: dict[str, BackendResponse]) -> None:
        """Store responses (buffered; committed in batches)."""
        if not entries:
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
        """Commit buffered responses (one transaction)."""
        if not self._buffer:
            return
        now = time.time()
        rows = [(k, r.model_dump_json(), now) for k, r in self._buffer.items()]
        self._buffer.clear()
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", rows)
        self._db.execute("COMMIT")

    def __len__(self) -> int:
        self.flush()
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Commit what is buffered and close the database."""
        self.flush()
        self._db.close()
