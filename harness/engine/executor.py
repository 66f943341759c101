"""The asyncio executor: runs work items with bounded, adaptive concurrency, retries and the cache.

It owns everything around a backend call (cache, retries, concurrency, parsing into verdicts); backends
only talk to models. Each finished verdict goes to the ``sink`` at once, so a crash loses nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from harness.backends.base import BackendResponse
from harness.engine.cache import JudgeCache
from harness.engine.limits import AdaptiveLimiter, RateLimiter, backoff_delay
from harness.engine.plan import BoundJudge, WorkItem
from harness.engine.progress import Progress
from harness.errors import JudgeError, TransientJudgeError
from harness.judging.pairwise import read_preference, winner_of
from harness.judging.pointwise import read_score
from harness.schema import Constitution, PairVerdict, Verdict

Record = Verdict | PairVerdict
Sink = Callable[[list[Record]], None]


@dataclass
class Outcome:
    """A backend's answer to one item (or the failure), with what it cost."""

    response: BackendResponse | None
    error: str = ""
    attempts: int = 1
    cached: bool = False


class JudgeWorker:
    """Runs one judge's items: batching, limits, retries, cache, verdicts."""

    def __init__(self, judge: BoundJudge, constitution: Constitution, cache: JudgeCache | None,
                 progress: Progress, sink: Sink, *, refresh: bool = False):
        self.judge, self.constitution, self.cache = judge, constitution, cache
        self.progress, self.sink, self.refresh = progress, sink, refresh
        self.limiter = AdaptiveLimiter(judge.config.max_concurrency)
        self.rate = RateLimiter(judge.config.requests_per_minute)

    async def run(self, items: list[WorkItem]) -> None:
        """Judge every item; returns when all have a verdict."""
        pending = self._serve_from_cache(items)
        size = max(1, self.judge.backend.batch_size)
        pending.sort(key=lambda i: (i.principle, len(i.request.messages[-1].content)))
        batches = [pending[i : i + size] for i in range(0, len(pending), size)]
        await asyncio.gather(*(self._run_batch(b) for b in batches))

    def _serve_from_cache(self, items: list[WorkItem]) -> list[WorkItem]:
        if self.cache is None or self.refresh:
            return list(items)
        hits = self.cache.get_many([i.cache_key for i in items])
        served = [self._verdict(i, Outcome(hits[i.cache_key], cached=True)) for i in items if i.cache_key in hits]
        if served:
            self.sink(served)
            self.progress.record(self.judge.config.id, served)
        return [i for i in items if i.cache_key not in hits]

    async def _run_batch(self, batch: list[WorkItem]) -> None:
        outcomes = await self._call(batch)
        verdicts: list[Record] = []
        for item, outcome in zip(batch, outcomes, strict=True):
            verdict = self._verdict(item, outcome)
            if verdict.status == "unscored" and not self.judge.backend.deterministic:
                verdict = await self._retry_invalid(item, verdict)
            verdicts.append(verdict)
        self._remember(batch, outcomes, verdicts)
        self.sink(verdicts)
        self.progress.record(self.judge.config.id, verdicts)

    async def _retry_invalid(self, item: WorkItem, verdict: Record) -> Record:
        """Ask again, a bounded number of times, when the answer could not be read."""
        for _ in range(min(2, self.judge.config.retries)):
            self.progress.retry(self.judge.config.id, "invalid")
            outcome = (await self._call([item]))[0]
            outcome.attempts += verdict.attempts
            verdict = self._verdict(item, outcome)
            if verdict.status != "unscored":
                break
        return verdict

    async def _call(self, batch: list[WorkItem]) -> list[Outcome]:
        """One backend call for the batch, with retries on transient failures."""
        retries = self.judge.config.retries
        for attempt in range(retries + 1):
            await self.rate.wait()
            await self.limiter.acquire()
            try:
                responses = await self.judge.backend.complete([i.request for i in batch])
            except TransientJudgeError as exc:
                await self.limiter.release(ok=False, throttled=exc.cause == "429")
                self.progress.retry(self.judge.config.id, exc.cause, final=attempt == retries)
                if attempt == retries:
                    return [Outcome(None, f"{exc.cause}: {exc}", attempt + 1) for _ in batch]
                await asyncio.sleep(backoff_delay(attempt, exc.retry_after))
                continue
            except JudgeError as exc:
                await self.limiter.release(ok=False)
                return [Outcome(None, str(exc), attempt + 1) for _ in batch]
            await self.limiter.release(ok=True)
            return [Outcome(r, attempts=attempt + 1) for r in responses]
        raise AssertionError("unreachable")

    def _remember(self, batch: list[WorkItem], outcomes: list[Outcome], verdicts: list[Record]) -> None:
        """Cache answers that gave a score; never failures or unusable answers."""
        if self.cache is None:
            return
        keep = {i.cache_key: o.response for i, o, v in zip(batch, outcomes, verdicts, strict=True)
                if v.status == "scored" and o.response is not None and not o.cached}
        self.cache.put_many(keep)

    def _verdict(self, item: WorkItem, outcome: Outcome) -> Record:
        structured = self.judge.style().structured
        if item.kind == "pairwise":
            return make_pair_verdict(item, outcome, structured)
        return make_verdict(item, outcome, self.constitution, structured)


def make_pair_verdict(item: WorkItem, outcome: Outcome, structured: bool) -> PairVerdict:
    """Turn a backend outcome into an ordered pairwise judgment."""
    base = dict(item_id=item.item_id, case_id=item.case_id, principle=item.principle, judge=item.judge,
                first=item.generator, second=item.other, attempts=outcome.attempts, cached=outcome.cached)
    resp = outcome.response
    if resp is None:
        return PairVerdict(status="error", reason=outcome.error, **base)
    cost = dict(raw_output=resp.text, tokens_in=resp.tokens_in, tokens_out=resp.tokens_out, latency_s=resp.latency_s)
    reading = read_preference(resp, structured)
    if reading.score is None:
        return PairVerdict(status="unscored", reason=reading.reason, **base, **cost)
    return PairVerdict(status="scored", p_first=round(reading.score, 6), distribution=reading.distribution,
                       winner=winner_of(reading.score, reading.distribution), rationale=reading.rationale,
                       **base, **cost)


def make_verdict(item: WorkItem, outcome: Outcome, constitution: Constitution, structured: bool) -> Verdict:
    """Turn a backend outcome into a verdict: scored, unscored with the reason, or error."""
    base = dict(item_id=item.item_id, case_id=item.case_id, generator=item.generator, principle=item.principle,
                judge=item.judge, attempts=outcome.attempts, cached=outcome.cached)
    resp = outcome.response
    if resp is None:
        return Verdict(status="error", reason=outcome.error, **base)
    cost = dict(raw_output=resp.text, tokens_in=resp.tokens_in, tokens_out=resp.tokens_out, latency_s=resp.latency_s)
    principle = constitution.principle(item.principle)
    reading = read_score(resp, principle.scale_max, structured)
    if reading.score is None:
        return Verdict(status="unscored", reason=reading.reason, **base, **cost)
    return Verdict(status="scored", score=round(reading.score, 6),
                   normalized=round((reading.score - 1) / (principle.scale_max - 1), 6),
                   distribution=reading.distribution, passed=reading.score >= principle.pass_threshold,
                   rationale=reading.rationale, **base, **cost)


async def execute(items: list[WorkItem], judges: list[BoundJudge], constitution: Constitution,
                  cache: JudgeCache | None, sink: Sink, progress: Progress, *, refresh: bool = False) -> None:
    """Run every item; judges run side by side, each within its own limits."""
    by_judge: dict[str, list[WorkItem]] = {}
    for item in items:
        by_judge.setdefault(item.judge, []).append(item)
    workers = [JudgeWorker(j, constitution, cache, progress, sink, refresh=refresh) for j in judges]
    started = time.monotonic()
    try:
        await asyncio.gather(*(w.run(by_judge.get(w.judge.config.id, [])) for w in workers))
    finally:
        progress.finish(time.monotonic() - started)
