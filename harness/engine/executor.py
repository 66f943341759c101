"""The asyncio executor: runs work items with bounded, adaptive concurrency, retries and the cache.

It owns everything around a backend call (cache, retries, concurrency, parsing into verdicts);
backends only talk to models. Each finished verdict goes to the ``sink`` at once, so a crash loses
nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from harness.backends.base import BackendResponse
from harness.engine.cache import JudgeCache
from harness.engine.limits import AdaptiveLimiter, Budget, RateLimiter, backoff_delay
from harness.engine.plan import BoundJudge, WorkItem
from harness.engine.progress import Progress
from harness.errors import JudgeError, TransientJudgeError
from harness.judging.pairwise import read_preference, winner_of
from harness.judging.pointwise import read_score
from harness.records import Constitution, Generation, PairVerdict, Verdict

Record = Verdict | PairVerdict | Generation
Winner = Literal["first", "second", "tie"]
Sink = Callable[[list[Record]], None]


@dataclass
class Outcome:
    """A backend's answer to one item (or the failure), with what it cost."""

    response: BackendResponse | None
    error: str = ""
    attempts: int = 1
    cached: bool = False


class JudgeWorker:
    """Runs one judge's items: a pool of ``max_concurrency`` tasks, limits, retries, cache,
    verdicts, spend.

    A fixed pool (rather than one task per item) keeps memory and scheduling flat for 100k-item
    runs.
    """

    def __init__(
        self,
        judge: BoundJudge,
        constitution: Constitution,
        cache: JudgeCache | None,
        progress: Progress,
        sink: Sink,
        *,
        refresh: bool = False,
        budget: Budget | None = None,
    ):
        self.judge, self.constitution = judge, constitution
        self.cache = cache if judge.backend.cacheable else None
        self.progress, self.sink, self.refresh = progress, sink, refresh
        self.config = judge.config
        self.limiter = AdaptiveLimiter(judge.config.max_concurrency)
        self.rate = RateLimiter(judge.config.requests_per_minute)
        self.budget = budget or Budget(None)
        self.structured = judge.style().structured
        self.left = 0  # items never started because the budget ran out

    async def run(self, items: list[WorkItem]) -> None:
        """Judge every item (or stop starting new ones once the budget is spent)."""
        pending = self._serve_from_cache(self._prescreened(items))
        size = max(1, self.judge.backend.batch_size)
        if size > 1 and self.judge.backend.reads_prompt:
            # Similar prompts together, so a local model's batches pad little.
            pending.sort(key=lambda i: (i.principle, _length(i)))
        queue = deque(pending[i : i + size] for i in range(0, len(pending), size))
        self._show_limit()
        await asyncio.gather(
            *(self._drain(queue) for _ in range(min(self.config.max_concurrency, len(queue))))
        )
        self.left += sum(len(b) for b in queue)

    async def _drain(self, queue: deque[list[WorkItem]]) -> None:
        while queue and not self.budget.exhausted:
            await self._run_batch(queue.popleft())

    def _prescreened(self, items: list[WorkItem]) -> list[WorkItem]:
        """Write the pre-screen's verdicts for the items it flags; the rest go on to the judge."""
        screen = self.judge.screen
        if screen is None:
            return list(items)
        rest, flagged = [], []
        for item in items:
            answer = screen.answer(item.request) if item.kind != "generate" else None
            if answer is None:
                rest.append(item)
            else:
                flagged.append(self._verdict(item, Outcome(answer)))
        if flagged:
            self.sink(flagged)
            self.progress.record(self.config.id, flagged)
        return rest

    def _serve_from_cache(self, items: list[WorkItem]) -> list[WorkItem]:
        if self.cache is None or self.refresh:
            return list(items)
        hits = self.cache.get_many([i.cache_key for i in items])
        served = [
            self._verdict(i, Outcome(hits[i.cache_key], cached=True))
            for i in items
            if i.cache_key in hits
        ]
        if served:
            self.sink(served)
            self.progress.record(self.config.id, served)
        return [i for i in items if i.cache_key not in hits]

    async def _run_batch(self, batch: list[WorkItem]) -> None:
        outcomes = await self._call(batch)
        if (
            outcomes is None
        ):  # the budget ran out before the call: no row, so a rerun does these items
            self.left += len(batch)
            return
        verdicts: list[Record] = []
        for k, (item, outcome) in enumerate(zip(batch, outcomes, strict=True)):
            verdict = self._verdict(item, outcome)
            if verdict.status == "unscored" and not self.judge.backend.deterministic:
                verdict, outcomes[k] = await self._retry_invalid(item, verdict, outcome)
            verdicts.append(verdict)
        # The run folder first: the cache is an optimisation and must never cost a paid verdict.
        self.sink(verdicts)
        self._remember(batch, outcomes, verdicts)
        self.progress.record(self.config.id, verdicts)

    async def _retry_invalid(
        self, item: WorkItem, verdict: Record, outcome: Outcome
    ) -> tuple[Record, Outcome]:
        """Ask again, a bounded number of times, when the answer could not be read; the last verdict
        and outcome.

        Not stopped by the budget: the item is already under way, and its row must be written whole.
        The final row carries the tokens and time of every attempt, so the log holds what was paid.
        """
        for _ in range(min(2, self.config.retries)):
            self.progress.retry(self.config.id, "invalid")
            outcomes = await self._call([item], gated=False)
            assert outcomes is not None  # only a gated call can be stopped
            outcome = outcomes[0]
            outcome.attempts += verdict.attempts
            verdict = _add_usage(self._verdict(item, outcome), verdict)
            if verdict.status != "unscored":
                break
        return verdict, outcome

    async def _call(self, batch: list[WorkItem], gated: bool = True) -> list[Outcome] | None:
        """One backend call for the batch, with retries on transient failures; None if the budget
        stopped it.
        """
        retries = self.config.retries
        for attempt in range(retries + 1):
            answer = await self._attempt(batch, attempt, gated)
            if answer is None or isinstance(answer, list):
                return answer
            if attempt == retries:
                return [Outcome(None, f"{answer.cause}: {answer}", attempt + 1) for _ in batch]
            await asyncio.sleep(backoff_delay(attempt, answer.retry_after))
        raise AssertionError("unreachable")

    async def _attempt(
        self, batch: list[WorkItem], attempt: int, gated: bool
    ) -> list[Outcome] | TransientJudgeError | None:
        """One try: outcomes, a transient error to retry, or None when the budget forbids
        starting.
        """
        await self.rate.wait()
        ticket = await self.limiter.acquire()
        if gated and self.budget.exhausted:
            self.limiter.release(ticket, ok=False)
            return None
        try:
            responses = await self.judge.backend.complete([i.request for i in batch])
        except TransientJudgeError as exc:
            self._released(ticket, ok=False, throttled=exc.cause == "429")
            self.progress.retry(self.config.id, exc.cause)
            return exc
        except JudgeError as exc:
            self._released(ticket, ok=False)
            return [Outcome(None, str(exc), attempt + 1) for _ in batch]
        self._released(ticket, ok=True, responses=responses, generating=batch[0].kind == "generate")
        return [Outcome(r, attempts=attempt + 1) for r in responses]

    def _released(
        self,
        ticket: int,
        *,
        ok: bool,
        throttled: bool = False,
        responses: Sequence[BackendResponse] = (),
        generating: bool = False,
    ) -> None:
        """Give the slot back and count the call: its tokens, its cost (generation apart), the
        concurrency limit.
        """
        limit = self.limiter.limit
        self.limiter.release(ticket, ok=ok, throttled=throttled)
        t_in = sum(r.tokens_in for r in responses)
        t_out = sum(r.tokens_out for r in responses)
        usd = self.config.cost(t_in, t_out) if responses else 0.0
        self.budget.add(usd)
        self.progress.paid(self.config.id, 1, t_in, t_out, usd, generation=generating)
        if self.limiter.limit != limit:
            self._show_limit()

    def _show_limit(self) -> None:
        lim = self.limiter
        self.progress.concurrency(self.config.id, lim.limit, lim.maximum, lim.lowest)

    def _remember(
        self, batch: list[WorkItem], outcomes: list[Outcome], verdicts: list[Record]
    ) -> None:
        """Cache answers that gave a score; never failures or unusable answers."""
        if self.cache is None:
            return
        keep = {
            i.cache_key: o.response
            for i, o, v in zip(batch, outcomes, verdicts, strict=True)
            if v.status == "scored" and o.response is not None and not o.cached
        }
        self.cache.put_many(keep)

    def _verdict(self, item: WorkItem, outcome: Outcome) -> Record:
        if item.kind == "generate":
            return make_generation(item, outcome)
        if item.kind == "pairwise":
            return make_pair_verdict(item, outcome, self.structured)
        return make_verdict(item, outcome, self.constitution, self.structured)


def _length(item: WorkItem) -> int:
    """Characters of the item's last message (or its subject's response, for model-free judges)."""
    req = item.request
    if req.messages:
        return len(req.messages[-1].content)
    return len(req.subject.response) if req.subject else 0


def _add_usage(verdict: Record, earlier: Record) -> Record:
    """``verdict`` with the tokens and seconds of an earlier attempt at the same item added."""
    return verdict.model_copy(
        update={
            "tokens_in": verdict.tokens_in + earlier.tokens_in,
            "tokens_out": verdict.tokens_out + earlier.tokens_out,
            "latency_s": verdict.latency_s + earlier.latency_s,
        }
    )


def make_pair_verdict(item: WorkItem, outcome: Outcome, structured: bool) -> PairVerdict:
    """Turn a backend outcome into an ordered pairwise judgment."""
    base: dict[str, Any] = dict(
        item_id=item.item_id,
        case_id=item.case_id,
        principle=item.principle,
        judge=item.judge,
        first=item.generator,
        second=item.other,
        attempts=outcome.attempts,
        cached=outcome.cached,
    )
    resp = outcome.response
    if resp is None:
        return PairVerdict(status="error", reason=outcome.error, **base)
    cost: dict[str, Any] = dict(
        raw_output=resp.text,
        tokens_in=resp.tokens_in,
        tokens_out=resp.tokens_out,
        latency_s=resp.latency_s,
        truncated=resp.truncated,
    )
    reading = read_preference(resp, structured)
    if reading.score is None:
        return PairVerdict(status="unscored", reason=reading.reason, **base, **cost)
    return PairVerdict(
        status="scored",
        p_first=round(reading.score, 6),
        distribution=reading.distribution,
        winner=cast(Winner, winner_of(reading.score, reading.distribution)),
        rationale=reading.rationale,
        **base,
        **cost,
    )


def make_generation(item: WorkItem, outcome: Outcome) -> Generation:
    """Turn a backend outcome into a generated text (a sample, critique or revision); empty text is
    unscored.
    """
    base: dict[str, Any] = dict(
        item_id=item.item_id,
        case_id=item.case_id,
        generator=item.generator,
        principle=item.principle,
        judge=item.judge,
        step=item.step,
        attempts=outcome.attempts,
        cached=outcome.cached,
    )
    resp = outcome.response
    if resp is None:
        return Generation(status="error", reason=outcome.error, **base)
    written = bool(resp.text.strip())
    return Generation(
        status="scored" if written else "unscored",
        text=resp.text,
        reason="" if written else "empty answer",
        tokens_in=resp.tokens_in,
        tokens_out=resp.tokens_out,
        latency_s=resp.latency_s,
        truncated=resp.truncated,
        **base,
    )


def make_verdict(
    item: WorkItem, outcome: Outcome, constitution: Constitution, structured: bool
) -> Verdict:
    """Turn a backend outcome into a verdict: scored, unscored with the reason, or error."""
    # One dict validated at once: on every item's path, and cheaper than keyword arguments merged
    # from several dicts.
    row: dict[str, Any] = {
        "item_id": item.item_id,
        "case_id": item.case_id,
        "generator": item.generator,
        "principle": item.principle,
        "judge": item.judge,
        "attempts": outcome.attempts,
        "cached": outcome.cached,
    }
    resp = outcome.response
    if resp is None:
        row.update(status="error", reason=outcome.error)
        return Verdict.model_validate(row)
    row.update(
        raw_output=resp.text,
        tokens_in=resp.tokens_in,
        tokens_out=resp.tokens_out,
        latency_s=resp.latency_s,
        truncated=resp.truncated,
    )
    principle = constitution.principle(item.principle)
    reading = read_score(resp, principle.scale_max, structured)
    if reading.score is None:
        row.update(status="unscored", reason=reading.reason)
        return Verdict.model_validate(row)
    row.update(
        status="scored",
        score=round(reading.score, 6),
        normalized=round((reading.score - 1) / (principle.scale_max - 1), 6),
        distribution=reading.distribution,
        passed=reading.score >= principle.pass_threshold,
        rationale=reading.rationale,
    )
    return Verdict.model_validate(row)


class LocalExecutor:
    """The in-process asyncio executor: one worker per judge, kept for the whole session.

    Called once per planned chunk; each judge's limits, retries and budget carry over between
    chunks.
    """

    def __init__(
        self,
        judges: list[BoundJudge],
        constitution: Constitution,
        cache: JudgeCache | None,
        sink: Sink,
        progress: Progress,
        *,
        refresh: bool = False,
        budget: Budget | None = None,
    ):
        self.cache = cache
        self.workers = {
            j.config.id: JudgeWorker(
                j, constitution, cache, progress, sink, refresh=refresh, budget=budget
            )
            for j in judges
        }

    async def run(self, items: list[WorkItem]) -> int:
        """Judge ``items``; returns how many the budget left unstarted."""
        by_judge: dict[str, list[WorkItem]] = {}
        for item in items:
            by_judge.setdefault(item.judge, []).append(item)
        before = sum(w.left for w in self.workers.values())
        try:
            await asyncio.gather(*(self.workers[j].run(todo) for j, todo in by_judge.items()))
        finally:
            if self.cache is not None:
                self.cache.flush()
        return sum(w.left for w in self.workers.values()) - before

    async def aclose(self) -> None:
        """Nothing to release: the session owns the backends and the cache."""


async def execute(
    items: list[WorkItem],
    judges: list[BoundJudge],
    constitution: Constitution,
    cache: JudgeCache | None,
    sink: Sink,
    progress: Progress,
    *,
    refresh: bool = False,
    budget: Budget | None = None,
) -> int:
    """Run every item once through a fresh :class:`LocalExecutor`; returns items left unstarted."""
    executor = LocalExecutor(
        judges, constitution, cache, sink, progress, refresh=refresh, budget=budget
    )
    started = time.monotonic()
    try:
        return await executor.run(items)
    finally:
        progress.finish(time.monotonic() - started)
