"""Which cases to read first: the report carries these, not every case.

A reader of a large run wants the problems: verdicts that errored or could not be read, judges that
disagree on the same response, and failing responses, worst first. Everything else stays in the run
folder (browse it with ``harness view``).
"""

from __future__ import annotations

import pandas as pd

MAX_CASES = 400  # cases a report carries in full: keeps report.html small at any scale


def cases_to_read(verdicts: pd.DataFrame, order: list[str], limit: int = MAX_CASES) -> list[str]:
    """Case ids worth reading first, most urgent first; every case (in ``order``) when few."""
    if len(order) <= limit:
        return order
    ranked = pd.concat([_broken(verdicts), _disagreeing(verdicts), _failing(verdicts)])
    return [str(i) for i in pd.unique(ranked)[:limit]]


def _broken(v: pd.DataFrame) -> pd.Series:
    """Cases with an error or an unscored verdict."""
    return v.loc[v["status"] != "scored", "case_id"]


def _disagreeing(v: pd.DataFrame, gap: float = 0.5) -> pd.Series:
    """Cases where judges' normalized scores of one response differ by ``gap`` or more, widest
    first.
    """
    scored = v[v["status"] == "scored"]
    if scored["judge"].nunique() < 2:
        return pd.Series(dtype=object)
    keys = ["case_id", "generator", "principle"]
    spread = scored.groupby(keys, sort=False)["normalized"].agg(lambda s: s.max() - s.min())
    wide = spread[spread >= gap].sort_values(ascending=False, kind="stable")
    return wide.index.get_level_values("case_id").to_series()


def _failing(v: pd.DataFrame) -> pd.Series:
    """Cases with a failing verdict, lowest normalized score first."""
    failed = v[v["passed"].eq(False)]
    return failed.sort_values("normalized", kind="stable")["case_id"]
