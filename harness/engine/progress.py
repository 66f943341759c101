"""Progress for long runs, and the manifest's record of each invocation.

Items done/total, rate, ETA, cache hits, unscored, errors, retries by cause, concurrency and spend.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from harness.records import Generation, JudgeUsage, PairVerdict, Verdict

LOG_INTERVAL = 15.0  # seconds between progress lines when the output is not a terminal


@dataclass
class JudgeTally:
    """Counts for one judge during one invocation."""

    total: int = 0
    done: int = 0
    cached: int = 0
    scored: int = 0
    unscored: int = 0
    errors: int = 0
    calls: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    tokens_in: int = 0
    tokens_out: int = 0
    spend: float = 0.0
    priced: bool = False
    limit: int = 0
    maximum: int = 0
    lowest: int = 0

    def usage(self) -> JudgeUsage:
        """The tally as the manifest records it."""
        return JudgeUsage(
            items=self.done,
            calls=self.calls,
            cache_hits=self.cached,
            scored=self.scored,
            unscored=self.unscored,
            errors=self.errors,
            retries=dict(sorted(self.retries.items())),
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            spend_usd=round(self.spend, 6) if self.priced else None,
            lowest_concurrency=self.lowest or None,
        )


class Progress:
    """Collects counts as verdicts arrive and redraws a status line at most every ``interval``
    seconds.
    """

    def __init__(
        self,
        totals: dict[str, int],
        stream: TextIO | None = None,
        interval: float | None = None,
        quiet: bool = False,
        priced: dict[str, bool] | None = None,
    ):
        self.tally = {
            j: JudgeTally(total=n, priced=(priced or {}).get(j, False)) for j, n in totals.items()
        }
        self.stream = stream or sys.stderr
        self._tty = self.stream.isatty()
        # a terminal line redraws in place each second; a log gets a new line at a calmer pace
        self.interval = interval if interval is not None else (1.0 if self._tty else LOG_INTERVAL)
        self.quiet = quiet
        self.started = time.monotonic()
        self.generation_spend = 0.0
        self._last = 0.0

    def record(self, judge: str, verdicts: Sequence[Verdict | PairVerdict | Generation]) -> None:
        """Count finished items (each one written to the run's log)."""
        t = self.tally[judge]
        for v in verdicts:
            t.done += 1
            t.cached += v.cached
            t.scored += v.status == "scored"
            t.unscored += v.status == "unscored"
            t.errors += v.status == "error"
        self._maybe_draw()

    def paid(
        self,
        judge: str,
        calls: int,
        tokens_in: int = 0,
        tokens_out: int = 0,
        usd: float = 0.0,
        generation: bool = False,
    ) -> None:
        """Count calls made (answered or not) and what the answers cost; ``generation`` spend is
        kept apart.
        """
        t = self.tally[judge]
        t.calls += calls
        t.tokens_in += tokens_in
        t.tokens_out += tokens_out
        if generation:
            self.generation_spend += usd
        else:
            t.spend += usd

    def retry(self, judge: str, cause: str) -> None:
        """Count a failed call by cause."""
        self.tally[judge].retries[cause] += 1

    def concurrency(self, judge: str, limit: int, maximum: int, lowest: int) -> None:
        """Note the judge's current concurrency limit (cut on 429, grown back while healthy)."""
        t = self.tally[judge]
        t.limit, t.maximum, t.lowest = limit, maximum, lowest

    @property
    def spend(self) -> float:
        """Spend of this invocation so far: judges plus generation, in US dollars."""
        return sum(t.spend for t in self.tally.values()) + self.generation_spend

    def line(self) -> str:
        """The status line: one segment per judge, then spend when any judge is priced."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        parts = [self._segment(j, t, elapsed) for j, t in self.tally.items()]
        if any(t.priced for t in self.tally.values()):
            parts.append(f"spend ${self.spend:.4f} (generation ${self.generation_spend:.4f})")
        return " | ".join(parts)

    def _segment(self, judge: str, t: JudgeTally, elapsed: float) -> str:
        fresh = t.done - t.cached
        rate = fresh / elapsed
        left = t.total - t.done
        eta = f"{left / rate:.0f}s" if rate > 0 and left else ("-" if left else "0s")
        retries = ",".join(f"{k}:{n}" for k, n in sorted(t.retries.items())) or "0"
        text = (
            f"{judge} {t.done}/{t.total} {rate:.1f}/s ETA {eta} cache {t.cached} "
            f"unscored {t.unscored} errors {t.errors} retries {retries}"
        )
        if t.maximum and t.limit < t.maximum:
            text += (
                f" conc {t.limit}/{t.maximum}"  # shown only while 429s hold it below the maximum
            )
        return text + (f" ${t.spend:.4f}" if t.priced else "")

    def _maybe_draw(self) -> None:
        now = time.monotonic()
        if self.quiet or now - self._last < self.interval:
            return
        self._last = now
        end = "\r" if self._tty else "\n"
        self.stream.write(self.line() + end)
        self.stream.flush()

    def finish(self, elapsed: float) -> None:
        """Draw the final line."""
        if not self.quiet:
            self.stream.write(self.line() + f" | {elapsed:.1f}s\n")
            self.stream.flush()
