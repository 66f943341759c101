"""Adaptive stopping (``--target-ci W``): judge each principle × generator only until its estimate is tight.

Pointwise items are grouped by (judge, principle, generator) and judged in rounds, following the cases'
seeded random order. After each round a group's normalized scores, in that order, go into an anytime-valid
confidence sequence (:func:`harness.analysis.sequential.sequential_ci`, empirical Bernstein); once its
half-width is at most W the group stops and its remaining items are never asked. Because the sequence is
valid at every n, looking after every round does not break its coverage. Pairwise items run in full.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from harness.analysis.sequential import sequential_ci
from harness.engine.plan import WorkItem
from harness.engine.store import Record
from harness.schema import Verdict

Group = tuple[str, str, str]
Execute = Callable[[list[WorkItem], Callable[[list[Record]], None]], Awaitable[int]]


@dataclass
class AdaptiveState:
    """Per group: the queue of items still to judge (in case order) and the scores seen, by case position."""

    queues: dict[Group, list[WorkItem]]
    values: dict[Group, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    stopped: set[Group] = field(default_factory=set)

    def active(self) -> list[Group]:
        return [g for g, q in self.queues.items() if q and g not in self.stopped]

    def skipped(self) -> int:
        """Items never asked because their group stopped."""
        return sum(len(self.queues[g]) for g in self.stopped)


def _group(item: WorkItem) -> Group:
    return (item.judge, item.principle, item.generator)


def initial_state(
    items: list[WorkItem], order: dict[str, int], done: dict[str, Record]
) -> AdaptiveState:
    """Queues in case order; verdicts already recorded (a resumed run) count towards each group."""
    queues: dict[Group, list[WorkItem]] = defaultdict(list)
    state = AdaptiveState(queues)
    for item in sorted(items, key=lambda i: order[i.case_id]):
        prior = done.get(item.item_id)
        if isinstance(prior, Verdict) and prior.status != "error":
            state.values[_group(item)][order[item.case_id]] = _value(prior)
        else:
            queues[_group(item)].append(item)
    return state


def _value(verdict: Verdict) -> float:
    return float(verdict.normalized) if verdict.normalized is not None else float("nan")


def update(
    state: AdaptiveState, order: dict[str, int], verdicts: list[Record], target: float
) -> None:
    """Fold new verdicts in and stop every group whose confidence sequence is narrow enough."""
    for v in verdicts:
        if isinstance(v, Verdict) and v.status != "error":
            state.values[(v.judge, v.principle, v.generator)][order[v.case_id]] = _value(v)
    for g, seen in state.values.items():
        scores = np.array([seen[k] for k in sorted(seen)], dtype=float)
        scores = scores[~np.isnan(scores)]  # unscored verdicts carry no score
        if (
            g not in state.stopped
            and sequential_ci(scores, target_half_width=target, min_n=10).stop
        ):
            state.stopped.add(g)


def pending(
    items: list[WorkItem], order: dict[str, int], done: dict[str, Record], target: float
) -> list[WorkItem]:
    """Items adaptive stopping would still judge (groups not yet stopped), before any new call."""
    state = initial_state(items, order, done)
    update(state, order, [], target)
    return [i for g in state.active() for i in state.queues[g]]


async def run_adaptive(
    items: list[WorkItem],
    order: dict[str, int],
    done: dict[str, Record],
    target: float,
    execute: Execute,
    sink: Callable[[list[Record]], None],
    chunk: int = 8,
) -> tuple[int, int]:
    """Judge pointwise items round by round until each group stops; returns (left by budget, skipped)."""
    state = initial_state(items, order, done)
    update(state, order, [], target)
    left = 0
    while state.active() and not left:
        batch = [i for g in state.active() for i in state.queues[g][:chunk]]
        for g in state.active():
            del state.queues[g][:chunk]
        fresh: list[Record] = []

        def collect(records: list[Record], _fresh: list[Record] = fresh) -> None:
            sink(records)
            _fresh.extend(records)

        left = await execute(batch, collect)
        update(state, order, fresh, target)
    return left, state.skipped()
