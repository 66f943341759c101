"""The persistent judge cache: content-addressed by the work item's cache key, shared across runs.

SQLite in WAL mode, so several runs (processes) can read and write at once. Only answers that yielded a
score are stored; failures and unusable answers are never cached, so they are retried next time.
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

    def __init__(self, path: Path | None = None):
        self.path = path or default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL, created REAL)"
        )

    def get_many(self, keys: list[str]) -> dict[str, BackendResponse]:
        """Cached responses for whichever of ``keys`` are present."""
        found: dict[str, BackendResponse] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT key, response FROM responses WHERE key IN ({marks})", chunk)
            found.update({k: BackendResponse.model_validate_json(r) for k, r in rows})
        return found

    def put_many(self, entries: dict[str, BackendResponse]) -> None:
        """Store responses (one transaction)."""
        if not entries:
            return
        now = time.time()
        rows = [(k, r.model_dump_json(), now) for k, r in entries.items()]
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", rows)
        self._db.execute("COMMIT")

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        self._db.close()
