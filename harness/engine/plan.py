"""Plan: expand suite × candidates × principles × judges into independent work items.

A work item is plain, serialisable data. Its ``cache_key`` hashes exactly what decides the answer:
the backend identity (name and output-changing options), the prompt-template version and the
rendered request. Secrets, timeouts and concurrency settings never enter it. ``item_id`` adds the
judge id, so two judges with identical settings still get one verdict each.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from harness.backends.base import Backend, BackendRequest
from harness.judging import pairwise
from harness.judging.pointwise import TEMPLATE_VERSION, Style, build_request
from harness.judging.prescreen import Prescreen
from harness.protocol import single_order
from harness.records import Case, Constitution, JudgeConfig


@dataclass(slots=True)
class WorkItem:
    """One judge call to make, with where its verdict belongs. Treat it as read-only.

    A plain dataclass: it is built only by this module, from values already validated, and
    building it is on the path of every item of a run (not frozen: a frozen dataclass sets each
    field through ``object.__setattr__``, four times slower).
    """

    item_id: str
    cache_key: str  # "" when the judge's answers are not cached
    judge: str
    case_id: str
    generator: str
    principle: str
    template: str
    request: BackendRequest
    kind: Literal["pointwise", "pairwise", "generate"] = "pointwise"
    other: str = ""  # pairwise: the generator shown second (``generator`` is shown first)
    step: str = ""  # generate: sample, critique or revision


def content_hash(payload: Any) -> str:
    """Stable SHA-256 of JSON-able data (sorted keys, no whitespace)."""
    text = json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_last_head: list[Any] = [None, None, b""]  # (identity, template, bytes) of the previous call


def _head(identity: dict[str, Any], template: str) -> bytes:
    """The identity part of a cache key, serialised once per judge.

    Planning passes one identity object per judge, so it is serialised once, not per item (a
    rules judge's identity holds every rule).
    """
    if _last_head[0] is not identity or _last_head[1] != template:
        text = json.dumps({"backend": identity, "template": template}, sort_keys=True, default=str)
        _last_head[:] = [identity, template, text.encode("utf-8")]
    return bytes(_last_head[2])


def make_item(
    judge: str,
    identity: dict[str, Any] | None,
    case_id: str,
    generator: str,
    principle: str,
    request: BackendRequest,
    template: str = TEMPLATE_VERSION,
    other: str = "",
    step: str = "",
) -> WorkItem:
    """A work item with its hashes computed.

    ``identity`` None: the judge's answers are never cached (a rules judge), so the item gets no
    cache key and its id hashes where the verdict belongs, not the rendered request.
    """
    cache_key = ""
    if identity is not None:
        # Pydantic's own JSON of the request (fixed field order) is as stable as a sorted dump
        # and several times cheaper; only the small identity dict needs sorting.
        digest = hashlib.sha256(_head(identity, template))
        digest.update(request.model_dump_json().encode("utf-8"))
        cache_key = digest.hexdigest()
    key = cache_key or f"{template}\x00{principle}"  # keyless: where the verdict belongs
    parts = "\x00".join((judge, key, case_id, generator, other, step))
    item_id = hashlib.sha256(parts.encode("utf-8")).hexdigest()[:32]
    kind: Literal["pointwise", "pairwise", "generate"] = (
        "generate" if step else "pairwise" if other else "pointwise"
    )
    fields = (judge, case_id, generator, principle, template, request, kind, other, step)
    return WorkItem(item_id, cache_key, *fields)


def cache_identity(backend: Backend) -> dict[str, Any] | None:
    """What joins a backend's cache keys: its identity, or None when its answers are not cached."""
    return backend.identity() if backend.cacheable else None


@dataclass
class BoundJudge:
    """A judge config with its backend instance."""

    config: JudgeConfig
    backend: Backend
    screen: Prescreen | None = None  # the hack pre-screen, when on: it answers flagged items itself

    def style(self) -> Style:
        """How prompts are built for this judge's backend (log-probs, structured output)."""
        return Style(
            logprobs=self.backend.reads_logprobs(),
            structured=self.backend.structured(),
            rationale=self.config.rationale,
            prompt=self.backend.reads_prompt,
        )

    def judges(self, principle: str) -> bool:
        """Whether this judge is asked about ``principle`` (its config and its backend agree)."""
        wanted = self.config.principles is None or principle in self.config.principles
        return wanted and self.backend.covers(principle)


# Whether to plan (judge id, case id, generator, principle id); False skips it before any rendering.
Want = Callable[[str, str, str, str], bool]


def _everything(judge: str, case: str, generator: str, principle: str) -> bool:
    return True


def iter_plan(
    cases: Iterable[Case],
    constitution: Constitution,
    judges: list[BoundJudge],
    seed: int = 0,
    want: Want = _everything,
) -> Iterator[WorkItem]:
    """Pointwise work items, streamed in a stable order (judge, case, candidate, principle)."""
    cases = list(cases)  # one chunk of cases: the caller streams the suite
    for judge in judges:
        identity, style = cache_identity(judge.backend), judge.style()
        jid = judge.config.id
        asked = [p for p in constitution.principles if judge.judges(p.id)]
        for case in cases:
            messages = case.messages()  # once per case, not once per item
            for cand in case.candidates:
                for principle in asked:
                    pid = principle.id
                    if want(jid, case.id, cand.generator, pid):
                        req = build_request(principle, case, cand, style, seed, messages)
                        yield make_item(jid, identity, case.id, cand.generator, pid, req)


def plan(
    cases: Iterable[Case], constitution: Constitution, judges: list[BoundJudge], seed: int = 0
) -> list[WorkItem]:
    """Every pointwise work item of a (small) set of cases, as a list."""
    return list(iter_plan(cases, constitution, judges, seed))


@dataclass(frozen=True)
class PairPlan:
    """How to pick and order pairs: all pairs, or a tournament of ``opponents`` per candidate when K
    is large.
    """

    both_orders: bool = True
    max_all_pairs_k: int = 6
    opponents: int = 3


def case_pairs(
    generators: list[str], how: PairPlan, seed: int, case_id: str
) -> list[tuple[str, str]]:
    """Unordered pairs to compare for one case: all of them, or a seeded round-robin tournament."""
    k = len(generators)
    if k <= how.max_all_pairs_k:
        return list(itertools.combinations(generators, 2))
    rng = random.Random(f"{seed}:{case_id}")
    order = rng.sample(generators, k)
    pairs = {
        tuple(sorted((order[i], order[(i + d) % k])))
        for i in range(k)
        for d in range(1, how.opponents + 1)
    }
    return sorted((a, b) for a, b in pairs)


def plan_pairs(
    cases: Iterable[Case],
    constitution: Constitution,
    judges: list[BoundJudge],
    how: PairPlan,
    seed: int = 0,
    want: Want = _everything,
) -> list[WorkItem]:
    """Every pairwise work item: each chosen pair, per principle and judge, in one or both orders."""
    return list(iter_pairs(cases, constitution, judges, how, seed, want))


def iter_pairs(
    cases: Iterable[Case],
    constitution: Constitution,
    judges: list[BoundJudge],
    how: PairPlan,
    seed: int = 0,
    want: Want = _everything,
) -> Iterator[WorkItem]:
    """Pairwise work items, streamed; ``want`` sees the generator shown first."""
    cases = list(cases)
    for judge in (j for j in judges if j.backend.pairwise()):
        identity, style = cache_identity(judge.backend), judge.style()
        jid = judge.config.id
        for case in cases:
            by_gen = {c.generator: c for c in case.candidates}
            for a, b in case_pairs(list(by_gen), how, seed, case.id):
                orders = (
                    [(a, b), (b, a)] if how.both_orders else [single_order(a, b, seed, case.id)]
                )
                for principle in constitution.principles:
                    pid = principle.id
                    if not judge.judges(pid) or not want(jid, case.id, a, pid):
                        continue
                    for x, y in orders:
                        req = pairwise.build_request(
                            principle, case, by_gen[x], by_gen[y], style, seed
                        )
                        yield make_item(
                            jid, identity, case.id, x, pid, req, pairwise.TEMPLATE_VERSION, other=y
                        )
