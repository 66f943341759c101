"""Adaptive stopping (``--target-ci W``): judge each principle × generator only until its estimate
is tight.

Pointwise items are grouped by (judge, principle, generator) and judged in rounds of a few cases,
following the cases' seeded random order. After each round a group's normalized scores, in that
order, go into an anytime-valid confidence sequence
(:func:`harness.analysis.sequential.sequential_ci`, empirical Bernstein); once its half-width is at
most W the group stops and its remaining items are never planned. Because the sequence is valid at
every n, looking after every round does not break its coverage. Pairwise items run in full.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import pandas as pd

from harness.analysis.sequential import sequential_ci
from harness.records import Verdict

Group = tuple[str, str, str]
ROUND_CASES = 8  # cases per round: small, so a group stops soon after its interval is narrow enough


class AdaptiveStop:
    """Which groups are still open, from the verdicts seen so far (a resumed run's included)."""

    def __init__(self, target: float, order: dict[str, int]):
        self.target, self.order = target, order
        self.values: dict[Group, dict[int, float]] = defaultdict(dict)
        self.stopped: set[Group] = set()
        self.skipped = 0  # items never planned because their group had stopped
        self._changed: set[Group] = set()

    def seed(self, done: pd.DataFrame) -> None:
        """Count the verdicts already in the run folder, then stop the groups they settle.

        ``done`` has the columns judge, principle, generator, case_id, normalized and status.
        """
        ok = done[(done["status"] != "error") & done["case_id"].isin(self.order.keys())]
        for row in ok.itertuples(index=False):
            self._add((row.judge, row.principle, row.generator), row.case_id, row.normalized)
        self.settle()

    def want(self, judge: str, case_id: str, generator: str, principle: str) -> bool:
        """Plan this pointwise item? No once its group has stopped (counted as skipped if not done)."""
        group = (judge, principle, generator)
        if group not in self.stopped:
            return True
        self.skipped += self.order[case_id] not in self.values[group]
        return False

    def update(self, records: Iterable[object]) -> None:
        """Fold new pointwise verdicts in and stop every group that is now narrow enough."""
        for v in records:
            if isinstance(v, Verdict) and v.status != "error":
                self._add((v.judge, v.principle, v.generator), v.case_id, v.normalized)
        self.settle()

    def _add(self, group: Group, case_id: str, normalized: float | None) -> None:
        value = float("nan") if normalized is None or pd.isna(normalized) else float(normalized)
        self.values[group][self.order[case_id]] = value
        self._changed.add(group)

    def settle(self) -> None:
        """Stop the changed groups whose confidence sequence is narrow enough."""
        for g in self._changed - self.stopped:
            seen = self.values[g]
            scores = np.array([seen[k] for k in sorted(seen)], dtype=float)
            scores = scores[~np.isnan(scores)]  # unscored verdicts carry no score
            if sequential_ci(scores, target_half_width=self.target, min_n=10).stop:
                self.stopped.add(g)
        self._changed.clear()
