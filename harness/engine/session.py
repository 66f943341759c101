"""One judging session: the single place that opens and closes what judging needs.

Every stage that calls a model (``run``, ``sample``, ``revise``, the pytest plugin) judges through a
:class:`JudgingSession`: it opens the cache, the budget, the progress line and the executor once,
takes work items chunk by chunk, sends every record to one sink, and on exit flushes the cache,
closes the backends and keeps the invocation's record (calls, retries, cache hits, spend) for the
manifest.
"""

from __future__ import annotations

import datetime as dt
import gc
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.engine.cache import JudgeCache
from harness.engine.executor import LocalExecutor, Sink
from harness.engine.limits import Budget
from harness.engine.plan import BoundJudge, WorkItem
from harness.engine.progress import Progress
from harness.errors import ConfigError
from harness.records import Constitution, Session

# Collect the youngest generation every 100,000 allocations (not 700), the middle one every 50 of
# those (not 10). A collection walks the objects still alive, not those freed since (reference
# counting frees nearly all), so fewer collections cost less in all: a chunk's items stay alive
# while it is judged, and each collection would walk them again. They never form cycles.
GC_THRESHOLDS = (100_000, 50, 10)


class RelaxedGC:
    """While open, the collector leaves alone what existed when it opened (``gc.freeze``: it would
    walk it on every collection, up to a third of the time per item) and collects at
    GC_THRESHOLDS. For long passes over many items, which build no reference cycles.

    Blocks nest: each freezes what exists when it opens; the outermost restores the collector.
    """

    depth = 0  # blocks open now, in this process
    saved = gc.get_threshold()

    def __enter__(self) -> RelaxedGC:
        gc.freeze()
        if RelaxedGC.depth == 0:
            RelaxedGC.saved = gc.get_threshold()
            gc.set_threshold(*GC_THRESHOLDS)
        RelaxedGC.depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        RelaxedGC.depth -= 1
        if RelaxedGC.depth == 0:
            gc.set_threshold(*RelaxedGC.saved)
            gc.unfreeze()


class Executor(Protocol):
    """Runs work items for a session (in-process asyncio, or a Ray actor pool)."""

    async def run(self, items: list[WorkItem]) -> int:
        """Judge the items; return how many the budget left unstarted."""
        ...

    async def aclose(self) -> None:
        """Release what the executor holds (actors, pools)."""
        ...


@dataclass
class SessionOptions:
    """How a session judges: cache, budget, output and executor."""

    use_cache: bool = True
    cache_path: Path | None = None
    refresh: bool = False  # ask the judges again even where the cache has an answer
    max_cost: float | None = None  # US dollars this invocation may spend; None: no cap
    quiet: bool = False
    executor: str = "local"  # "local" (asyncio, in process) or "ray"
    ray: dict[str, Any] = field(default_factory=dict)  # Ray settings (address, actors, resources)


class JudgingSession:
    """Judges work items with a set of bound judges; use as ``async with``."""

    def __init__(
        self,
        judges: list[BoundJudge],
        constitution: Constitution,
        sink: Sink,
        totals: dict[str, int],
        options: SessionOptions | None = None,
    ):
        self.judges, self.constitution, self.sink = judges, constitution, sink
        self.options = options or SessionOptions()
        priced = {b.config.id: b.config.priced for b in judges}
        self.progress = Progress(totals, quiet=self.options.quiet, priced=priced)
        self.budget = Budget(self.options.max_cost)
        self.cache: JudgeCache | None = None
        self.executor: Executor | None = None
        self.left = 0  # items the budget left unstarted, over the whole session
        self._started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self._clock = time.monotonic()
        self._sizes: dict[str, dict[str, int]] = {}
        # Only for judges that answer in microseconds (not worth caching) is the collector a
        # visible share of the time. A model judge's batches may leave cycles holding activations:
        # the default collector frees them soon.
        cheap = all(not b.backend.cacheable for b in judges)
        self._gc: AbstractContextManager[Any] = RelaxedGC() if cheap else nullcontext()

    async def __aenter__(self) -> JudgingSession:
        # Everything loaded so far lives as long as the session; items and verdicts are acyclic.
        self._gc.__enter__()
        self._warn_unpriced()
        if self.options.use_cache:
            self.cache = JudgeCache(self.options.cache_path)
        self.executor = self._executor()
        return self

    def _executor(self) -> Executor:
        opts = self.options
        args = (self.judges, self.constitution, self.cache, self.sink, self.progress)
        if opts.executor == "local":
            return LocalExecutor(*args, refresh=opts.refresh, budget=self.budget)
        if opts.executor == "ray":  # Ray is imported only here, and only when asked for
            from harness.engine.ray_executor import RayExecutor, RaySettings

            settings = RaySettings(**opts.ray)
            return RayExecutor(*args, refresh=opts.refresh, budget=self.budget, settings=settings)
        raise ConfigError(f"unknown executor {opts.executor!r}; expected 'local' or 'ray'")

    async def judge(self, items: list[WorkItem]) -> int:
        """Judge one chunk of items; returns how many the budget left unstarted."""
        if not items or self.stopped:
            # Once the budget is spent, later chunks are still planned (so they can be counted as
            # left for the next invocation) but no call is started for them.
            self.left += len(items)
            return len(items)
        assert self.executor is not None, "use the session as `async with`"
        left = await self.executor.run(items)
        self.left += left
        return left

    @property
    def stopped(self) -> bool:
        """True once the --max-cost budget is spent: later chunks are not started."""
        return self.budget.exhausted

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.executor is not None:
                await self.executor.aclose()
        finally:
            self.progress.finish(time.monotonic() - self._clock)
            self._sizes = {b.config.id: b.backend.size() for b in self.judges}
            for b in self.judges:
                await b.backend.aclose()
            if self.cache is not None:
                self.cache.close()
            self._gc.__exit__(None, None, None)

    def record(self) -> Session:
        """The manifest's record of this invocation: counts per judge, spend, why it stopped."""
        tallies = self.progress.tally
        left, cap = self.left, self.options.max_cost
        stopped = f"--max-cost {cap:g} reached; {left} items not started" if left else ""
        judges = {
            j: t.usage().model_copy(update=self._sizes.get(j, {})) for j, t in tallies.items()
        }
        return Session(
            started=self._started,
            elapsed_s=round(time.monotonic() - self._clock, 3),
            judges=judges,
            generation_spend_usd=round(self.progress.generation_spend, 6),
            spend_usd=round(self.progress.spend, 6),
            max_cost_usd=cap,
            stopped=stopped,
        )

    def _warn_unpriced(self) -> None:
        """A budget cannot count what has no price: say so rather than stop too late in silence."""
        free = [
            b.config.id for b in self.judges if not b.config.priced and b.backend.name == "openai"
        ]
        if self.options.max_cost is not None and free:
            print(
                f"warning: --max-cost counts no spend for judge(s) {', '.join(free)}: they set "
                "no price_per_million_input / price_per_million_output",
                file=sys.stderr,
            )


async def judge_once(
    items: list[WorkItem],
    judges: list[BoundJudge],
    constitution: Constitution,
    sink: Sink,
    totals: dict[str, int] | None = None,
    options: SessionOptions | None = None,
) -> Session:
    """Judge a list of items in one session (closing the judges after); returns its record."""
    if totals is None:
        totals = {b.config.id: sum(i.judge == b.config.id for i in items) for b in judges}
    async with JudgingSession(judges, constitution, sink, totals, options) as session:
        await session.judge(items)
    return session.record()
