"""Progress for long runs: items done/total, rate, ETA, cache hits, unscored, errors and retries by cause."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from harness.schema import PairVerdict, Verdict


@dataclass
class JudgeTally:
    """Counts for one judge."""

    total: int = 0
    done: int = 0
    cached: int = 0
    scored: int = 0
    unscored: int = 0
    errors: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    failed_retries: int = 0


class Progress:
    """Collects counts as verdicts arrive and redraws a status line at most every ``interval`` seconds."""

    def __init__(self, totals: dict[str, int], stream: TextIO | None = None, interval: float = 1.0,
                 quiet: bool = False):
        self.tally = {j: JudgeTally(total=n) for j, n in totals.items()}
        self.stream = stream or sys.stderr
        self.interval = interval
        self.quiet = quiet
        self.started = time.monotonic()
        self._last = 0.0
        self._tty = self.stream.isatty()

    def record(self, judge: str, verdicts: Sequence[Verdict | PairVerdict]) -> None:
        t = self.tally[judge]
        for v in verdicts:
            t.done += 1
            t.cached += v.cached
            t.scored += v.status == "scored"
            t.unscored += v.status == "unscored"
            t.errors += v.status == "error"
        self._maybe_draw()

    def retry(self, judge: str, cause: str, final: bool = False) -> None:
        self.tally[judge].retries[cause] += 1
        self.tally[judge].failed_retries += final

    def line(self) -> str:
        """The status line: one segment per judge."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return " | ".join(self._segment(j, t, elapsed) for j, t in self.tally.items())

    def _segment(self, judge: str, t: JudgeTally, elapsed: float) -> str:
        fresh = t.done - t.cached
        rate = fresh / elapsed
        left = t.total - t.done
        eta = f"{left / rate:.0f}s" if rate > 0 and left else ("-" if left else "0s")
        retries = ",".join(f"{k}:{n}" for k, n in sorted(t.retries.items())) or "0"
        return (f"{judge} {t.done}/{t.total} {rate:.1f}/s ETA {eta} cache {t.cached} "
                f"unscored {t.unscored} errors {t.errors} retries {retries}")

    def _maybe_draw(self) -> None:
        now = time.monotonic()
        if self.quiet or now - self._last < self.interval:
            return
        self._last = now
        end = "\r" if self._tty else "\n"
        self.stream.write(self.line() + end)
        self.stream.flush()

    def finish(self, elapsed: float) -> None:
        if not self.quiet:
            self.stream.write(self.line() + f" | {elapsed:.1f}s\n")
            self.stream.flush()
