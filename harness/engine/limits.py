"""Limits for one judge: adaptive (AIMD) concurrency, requests per minute, backoff, and a spending
budget.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque


class AdaptiveLimiter:
    """A semaphore whose size is cut on rate limiting and grows back while the endpoint is healthy.

    Additive increase, multiplicative decrease, as TCP does: a 429 halves the limit, but only once
    for the calls started since the last cut (the 429s of calls that started before it are echoes of
    the same overload, so a burst of them does not collapse the limit to 1); each run of ``limit``
    successes raises it by one, up to the configured maximum. Waiters are served first in, first
    out, one wake-up per free slot.
    """

    def __init__(self, maximum: int):
        self.maximum = maximum
        self.limit = maximum
        self.lowest = maximum
        self.cuts = 0
        self._in_flight = 0
        self._successes = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_flight(self) -> int:
        """Calls holding a slot now."""
        return self._in_flight

    async def acquire(self) -> int:
        """Wait for a slot; returns a ticket (the cut count now) to hand back to :meth:`release`."""
        if self._in_flight < self.limit and not self._waiters:
            self._in_flight += 1
            return self.cuts
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._free()  # the slot was granted just as we were cancelled: give it back
            raise
        return self.cuts

    def release(self, ticket: int, *, ok: bool, throttled: bool = False) -> None:
        """Free the slot taken with ``ticket``; ``throttled`` (a 429) cuts, ``ok`` counts towards
        growth.
        """
        if throttled and ticket == self.cuts:
            self.limit = max(1, self.limit // 2)
            self.lowest = min(self.lowest, self.limit)
            self.cuts += 1
            self._successes = 0
        elif ok:
            self._grow()
        self._free()

    def _free(self) -> None:
        self._in_flight -= 1
        while self._waiters and self._in_flight < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self._in_flight += 1  # handed over to the waiter, so no one else can take it first
                fut.set_result(None)

    def _grow(self) -> None:
        self._successes += 1
        if self._successes >= self.limit and self.limit < self.maximum:
            self.limit += 1
            self._successes = 0


class RateLimiter:
    """Spaces request starts so no more than ``per_minute`` begin in any minute on average."""

    def __init__(self, per_minute: float | None):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        """Return when the next request may start."""
        if not self.interval:
            return
        # No lock needed: the event loop runs this check-and-book step without interruption.
        now = time.monotonic()
        delay = self._next - now
        self._next = max(now, self._next) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


def backoff_delay(
    attempt: int, retry_after: float | None, base: float = 0.5, cap: float = 30.0
) -> float:
    """Seconds to wait before retry ``attempt`` (0-based).

    Retry-After when the server gave one (plus up to 10 % jitter, so the callers it told to come
    back at the same moment do not all return at once), else full-jitter exponential backoff.
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), cap * 4) * random.uniform(1.0, 1.1)
    return random.uniform(0, min(cap, base * 2**attempt))


class Budget:
    """A spending cap in US dollars for one invocation: once reached, no new paid call starts.

    Spend is known only when a call returns, so calls in flight at the moment the cap is reached
    still finish (and are paid); the overshoot is at most their cost.
    """

    def __init__(self, limit_usd: float | None):
        self.limit = limit_usd
        self.spent = 0.0

    def add(self, usd: float) -> None:
        """Count what a finished call cost."""
        self.spent += usd

    @property
    def exhausted(self) -> bool:
        """True once spend has reached the cap (never without a cap)."""
        return self.limit is not None and self.spent >= self.limit
