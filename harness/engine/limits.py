"""Concurrency and rate limits for one judge: adaptive (AIMD) concurrency, requests per minute, backoff."""

from __future__ import annotations

import asyncio
import random
import time


class AdaptiveLimiter:
    """A semaphore whose size is cut on rate limiting and grows back while the endpoint is healthy.

    Additive increase, multiplicative decrease: a 429 halves the limit; each run of ``limit`` successes
    raises it by one, up to the configured maximum.
    """

    def __init__(self, maximum: int):
        self.maximum = maximum
        self.limit = maximum
        self._in_flight = 0
        self._successes = 0
        self._cond = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self._in_flight < self.limit)
            self._in_flight += 1

    async def release(self, *, ok: bool, throttled: bool = False) -> None:
        async with self._cond:
            self._in_flight -= 1
            if throttled:
                self.limit = max(1, self.limit // 2)
                self._successes = 0
            elif ok:
                self._grow()
            self._cond.notify_all()

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
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


def backoff_delay(attempt: int, retry_after: float | None, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): Retry-After if given, else full-jitter exponential."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), cap * 4)
    return random.uniform(0, min(cap, base * 2**attempt))
