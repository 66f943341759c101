"""The Ray executor: the local executor's judging, with the backend calls on Ray actor pools.

The driver keeps everything that touches the run: cache lookups, the budget, retries, progress and
the sink, so it stays the single writer of the run folder. Each judge gets a pool of actors, and
each actor builds one backend instance from the judge config (as ``bind_judges`` does), so a local
model loads once per actor. Batches of :class:`BackendRequest` go out; :class:`BackendResponse`
lists (or the judge error) come back, and the driver turns them into records with
:mod:`harness.engine.executor`'s own functions, so verdicts equal the local executor's.

An actor that dies takes nothing with it: each of its calls in flight is sent again to a live actor,
and a replacement actor is started (at most ``restarts`` per pool). A batch is written only once its
answer is back on the driver, so nothing is lost and nothing is written twice.

Ray is imported inside functions only: importing the harness never needs it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from harness.backends.base import (
    Backend,
    BackendRequest,
    BackendResponse,
    backend_class,
    parse_options,
)
from harness.engine.cache import JudgeCache
from harness.engine.executor import JudgeWorker, LocalExecutor, Sink
from harness.engine.limits import Budget
from harness.engine.plan import BoundJudge, WorkItem
from harness.engine.progress import Progress
from harness.errors import ConfigError, JudgeError, RunError, TransientJudgeError
from harness.records import Constitution, JudgeConfig

INSTALL = "pip install 'constitutional-harness[ray]'  (or: pip install 'ray[data]==2.60.0')"
NAMESPACE = "harness"  # actors are named here, so tools (and tests) can find their processes


@dataclass
class RaySettings:
    """Where to run and how big each pool is; ``None`` keeps the judge config's ``ray`` value."""

    address: str | None = None  # None: start a local cluster; "auto": join the running one
    actors: int | None = None
    num_cpus: float | None = None
    num_gpus: float | None = None
    restarts: int = 3  # replacement actors a pool may start after deaths, beyond its size

    def resources(self, config: JudgeConfig) -> tuple[int, float, float]:
        """(actors, CPUs per actor, GPUs per actor) for a judge: these settings over its config."""
        own = config.ray
        return (
            self.actors if self.actors is not None else own.actors,
            self.num_cpus if self.num_cpus is not None else own.num_cpus,
            self.num_gpus if self.num_gpus is not None else own.num_gpus,
        )


def import_ray() -> Any:
    """The ``ray`` module, or a ConfigError that says exactly what to install."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--executor ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (None: start a local one); True if this call connected."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    # A cluster of its own stays on loopback: nothing outside this machine needs to reach it.
    extra: dict[str, Any] = (
        {} if address else {"include_dashboard": False, "_node_ip_address": "127.0.0.1"}
    )
    if address:
        _use_cluster_token()
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False, **extra)
    except ConnectionError as exc:
        raise ConfigError(f"--ray-address {address}: no Ray cluster there ({exc})") from None
    return True


def _use_cluster_token() -> None:
    """Use the token of a ``ray start`` cluster on this machine (~/.ray/auth_token).

    ``ray start`` does; a driver that joins one leaves token authentication off unless
    RAY_AUTH_MODE says otherwise.
    """
    try:
        from ray._private.authentication import authentication_token_setup as setup
    except ImportError:  # another Ray version: its own defaults apply
        return
    setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def build_backend(config: JudgeConfig, where: str) -> Backend:
    """One backend instance from a judge config, as ``bind_judges`` builds it."""
    cls = backend_class(config.backend)
    return cls(parse_options(cls, config.options, where), judge=config.id)


# : What an actor answers: ("ok", responses) | ("transient", message, cause, retry_after) |
# ("error", message)
Answer = tuple[Any, ...]


class BackendHost:
    """The body of a Ray actor: one backend instance, answering batches of requests."""

    def __init__(self, config: JudgeConfig, where: str):
        self.backend = build_backend(config, where)

    def pid(self) -> int:
        """The actor's process id (to watch it, or to kill it in a test)."""
        return os.getpid()

    async def complete(self, requests: list[BackendRequest]) -> Answer:
        """The backend's answer to a batch; judge errors come back as values, with their cause."""
        try:
            return ("ok", await self.backend.complete(requests))
        except TransientJudgeError as exc:
            return ("transient", str(exc), exc.cause, exc.retry_after)
        except JudgeError as exc:
            return ("error", str(exc))

    async def warm(self) -> None:
        """Load the model now (backends that load lazily), so a benchmark times judging only."""
        load = getattr(self.backend, "load", None)
        if callable(load):
            await asyncio.to_thread(load)

    def size(self) -> dict[str, int]:
        """The backend's parameter counts."""
        return self.backend.size()

    def cpu_s(self) -> float:
        """CPU seconds this actor's process has used (for cost figures)."""
        return time.process_time()

    async def aclose(self) -> None:
        """Release what the backend holds."""
        await self.backend.aclose()


def unpack(answer: Answer) -> list[BackendResponse]:
    """Responses from an actor's answer, or the judge error it carried, raised on the driver."""
    if answer[0] == "ok":
        return list(answer[1])
    if answer[0] == "transient":
        raise TransientJudgeError(answer[1], answer[2], answer[3])
    raise JudgeError(answer[1])


class ActorPool:
    """A judge's actors: sends each batch to the least busy live one; replaces actors that die."""

    def __init__(self, config: JudgeConfig, where: str, settings: RaySettings):
        self.ray = import_ray()
        self.config, self.where = config, where
        self.size, self.cpus, self.gpus = settings.resources(config)
        self.restarts = settings.restarts
        self.host = self.ray.remote(BackendHost)
        self.tag = f"{config.id}-{uuid.uuid4().hex[:8]}"
        self.serial = itertools.count()
        self.busy: dict[Any, int] = {}
        self.deaths = 0
        for _ in range(self.size):
            self._spawn()

    def _spawn(self) -> None:
        actor = self.host.options(
            name=f"{self.tag}-{next(self.serial)}",
            namespace=NAMESPACE,
            num_cpus=self.cpus,
            num_gpus=self.gpus,
            max_restarts=0,  # a death is handled here, where the calls in flight are known
            max_concurrency=self.config.max_concurrency,
        ).remote(self.config, self.where)
        self.busy[actor] = 0

    @property
    def actors(self) -> list[Any]:
        """The live actors."""
        return list(self.busy)

    async def start(self) -> None:
        """Wait until every actor is up; an actor that cannot build its backend is a RunError."""
        try:
            await asyncio.gather(*(a.pid.remote() for a in self.actors))
        except self.ray.exceptions.RayError as exc:
            raise RunError(f"judge {self.config.id}: a Ray actor did not start: {exc}") from None

    async def warm(self) -> None:
        """Load every actor's model now."""
        await asyncio.gather(*(a.warm.remote() for a in self.actors))

    async def call(self, requests: list[BackendRequest]) -> list[BackendResponse]:
        """One batch on one actor; on the actor's death, the same batch again on another."""
        while True:
            if not self.busy:
                raise JudgeError(f"no Ray actor of judge {self.config.id} is left")
            actor = min(self.busy, key=self.busy.__getitem__)
            self.busy[actor] += 1
            try:
                answer = await actor.complete.remote(requests)
            except self.ray.exceptions.RayActorError as exc:
                self._lost(actor, exc)
                continue
            finally:
                if actor in self.busy:
                    self.busy[actor] -= 1
            return unpack(answer)

    def _lost(self, actor: Any, exc: Exception) -> None:
        """Forget a dead actor (once, however many calls saw it die) and start a replacement."""
        if actor not in self.busy:
            return
        del self.busy[actor]
        self.deaths += 1
        if self.deaths <= self.restarts:
            self._spawn()
        if not self.busy:
            raise JudgeError(f"every Ray actor of judge {self.config.id} died; the last: {exc}")

    async def close(self) -> None:
        """Let each backend release what it holds, then end the actors."""
        closing = [a.aclose.remote() for a in self.actors]
        await asyncio.gather(*closing, return_exceptions=True)
        for actor in self.actors:
            self.ray.kill(actor)
        self.busy.clear()


class RemoteBackend(Backend):
    """The driver's stand-in for a judge's backend: same answers, computed on the pool's actors."""

    name = "ray"

    def __init__(self, local: Backend, pool: ActorPool):
        super().__init__(local.options, judge=local.judge_id)
        self.Options = local.Options  # type: ignore[misc]
        self.local, self.pool = local, pool
        self.batch_size, self.deterministic = local.batch_size, local.deterministic
        self.reads_prompt, self.cacheable = local.reads_prompt, local.cacheable

    def identity(self) -> dict[str, Any]:
        """The local backend's identity (part of every cache key)."""
        return self.local.identity()

    def covers(self, principle: str) -> bool:
        """Whether the local backend judges the principle."""
        return self.local.covers(principle)

    def pairwise(self) -> bool:
        """Whether the local backend compares two responses."""
        return self.local.pairwise()

    def reads_logprobs(self) -> bool:
        """Whether the local backend reads log-probs."""
        return self.local.reads_logprobs()

    def structured(self) -> bool:
        """Whether the local backend asks for JSON answers."""
        return self.local.structured()

    async def complete(self, requests: list[BackendRequest]) -> list[BackendResponse]:
        """The batch, answered on one of the pool's actors."""
        return await self.pool.call(requests)


def remote_judge(judge: BoundJudge, pool: ActorPool) -> BoundJudge:
    """The judge with its calls sent to ``pool``; ``max_concurrency`` applies per actor."""
    wider = judge.config.model_copy(
        update={"max_concurrency": judge.config.max_concurrency * pool.size}
    )
    return BoundJudge(wider, RemoteBackend(judge.backend, pool), screen=judge.screen)


class RayExecutor:
    """The session's executor on Ray: a driver-side executor whose judges call actor pools.

    A :class:`LocalExecutor` runs on the driver. A judge's pool opens when the judge first has items
    and stays for the whole session, so a local model loads once, however many chunks come.
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
        settings: RaySettings | None = None,
    ):
        self.judges = {j.config.id: j for j in judges}
        self.settings = settings or RaySettings()
        self.constitution, self.cache, self.sink = constitution, cache, sink
        self.progress, self.refresh, self.budget = progress, refresh, budget
        self.driver = LocalExecutor([], constitution, cache, sink, progress, budget=budget)
        self.pools: dict[str, ActorPool] = {}
        self.started_cluster = False

    async def run(self, items: list[WorkItem]) -> int:
        """Judge ``items``; returns how many the budget left unstarted."""
        self.started_cluster |= connect(self.settings.address)
        for jid in sorted({i.judge for i in items} - set(self.pools)):
            await self._open(self.judges[jid])
        return await self.driver.run(items)

    async def _open(self, judge: BoundJudge) -> None:
        """Start the judge's pool and give the driver a worker that calls it."""
        pool = ActorPool(judge.config, f"judge {judge.config.id}", self.settings)
        try:
            await pool.start()
        except BaseException:
            await pool.close()
            raise
        self.pools[judge.config.id] = pool
        self.driver.workers[judge.config.id] = JudgeWorker(
            remote_judge(judge, pool),
            self.constitution,
            self.cache,
            self.progress,
            self.sink,
            refresh=self.refresh,
            budget=self.budget,
        )

    async def aclose(self) -> None:
        """End the pools (backends release what they hold) and a cluster this executor started."""
        pools, self.pools = list(self.pools.values()), {}
        await asyncio.gather(*(p.close() for p in pools))
        if self.started_cluster:
            self.started_cluster = False
            import_ray().shutdown()
