"""Streamed planning: the run's work items, chunk by chunk of cases, never all at once.

A :class:`Planner` applies the run's filters (chosen principles, labelled-only, adaptive stopping)
before any prompt is rendered, counts the planned items without rendering them, and yields each
chunk's items for the session to judge.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from harness.engine.plan import BoundJudge, PairPlan, WorkItem, case_pairs, iter_pairs, iter_plan
from harness.judging.prescreen import ConstantAnswers, Prescreen
from harness.records import Case, Constitution

Want = Callable[[str, str, str, str], bool]


@dataclass
class Planner:
    """What a run plans: which kinds, which principles, which cases' labels restrict them."""

    constitution: Constitution
    judges: list[BoundJudge]
    seed: int = 0
    pointwise: bool = True
    pairwise: bool = False
    pairs: PairPlan = field(default_factory=PairPlan)
    principles: Sequence[str] = ()  # only these principles (empty: all)
    labels: dict[str, str] = field(default_factory=dict)  # case id -> its human label's principle
    gate: Want | None = None  # an extra pointwise filter (adaptive stopping)

    def keep(self, judge: str, case_id: str, generator: str, principle: str) -> bool:
        """The run's filters, before any rendering: chosen principles, labelled-only."""
        if self.principles and principle not in self.principles:
            return False
        label = self.labels.get(case_id)
        return label is None or label == principle

    def _point(self, judge: str, case_id: str, generator: str, principle: str) -> bool:
        if not self.keep(judge, case_id, generator, principle):
            return False
        return self.gate is None or self.gate(judge, case_id, generator, principle)

    def items(self, cases: Sequence[Case]) -> Iterator[WorkItem]:
        """The work items of a chunk of cases: pointwise, then pairwise."""
        if self.pointwise:
            yield from iter_plan(cases, self.constitution, self.judges, self.seed, self._point)
        if self.pairwise:
            yield from iter_pairs(
                cases, self.constitution, self.judges, self.pairs, self.seed, self.keep
            )

    def count(self, cases: Sequence[Case]) -> Counter[str]:
        """Items the run plans per judge, counted without rendering a prompt (adaptive gate
        aside).
        """
        counts: Counter[str] = Counter()
        for judge in self.judges:
            jid = judge.config.id
            pids = [p.id for p in self.constitution.principles if judge.judges(p.id)]
            for case in cases:
                wanted = [p for p in pids if self.keep(jid, case.id, "", p)]
                if self.pointwise:
                    counts[jid] += len(case.candidates) * len(wanted)
                if self.pairwise and judge.backend.pairwise():
                    gens = [c.generator for c in case.candidates]
                    n_pairs = len(case_pairs(gens, self.pairs, self.seed, case.id))
                    orders = 2 if self.pairs.both_orders else 1
                    counts[jid] += n_pairs * orders * len(wanted)
        return counts


@dataclass
class Survey:
    """What one pass over the suite's cases learns on its way to the run folder: the items the run
    plans per judge, and the answers the pre-screen will flag as input-independent.
    """

    planner: Planner
    constants: ConstantAnswers | None
    planned: Counter[str] = field(default_factory=Counter)

    def watch(self, chunks: Iterable[list[tuple[bytes, Case]]]) -> Iterator[tuple[bytes, Case]]:
        """The cases with their JSON lines, noted as they pass."""
        for chunk in chunks:
            self.planned += self.planner.count([case for _, case in chunk])
            for line, case in chunk:
                if self.constants is not None:
                    self.constants.add(case)
                yield line, case

    @property
    def total(self) -> int:
        """Items planned, all judges together."""
        return sum(self.planned.values())

    def screened(self, bound: list[BoundJudge]) -> list[BoundJudge]:
        """The judges with the run's pre-screen, when it is on."""
        if self.constants is None:
            return bound
        screen = Prescreen(self.constants.found())
        return [dataclasses.replace(b, screen=screen) for b in bound]
