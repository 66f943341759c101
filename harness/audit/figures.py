"""The report card's figures, computed from the audit's run folders alone (no model calls).

An audit judges one suite twice, with the pre-screen off and on. The suite holds the sampled
human-labelled cases (the *controls*) and their probe cases (``<case>~<class>``, genuine answer
against a hack). From the controls: agreement with people per source and protocol, position bias,
length bias and calibration. From the probes: false-positive rates per class and defence.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.agreement import human_agreement
from harness.analysis.pairwise import combine_orders, position_bias
from harness.analysis.scores import wilson_interval
from harness.audit.probes import CONTROL, GENUINE, HACK, PROBE_TAG, PROBES, probe_class
from harness.protocol import single_order
from harness.rundir import PAIRS, VERDICTS, RunData

#: Source tags of the bundled human-labelled suites, with their names on the card.
SOURCES = {
    "hh-harmless": "HH-RLHF harmless",
    "hh-helpful": "HH-RLHF helpful",
    "truthfulqa": "TruthfulQA",
    "llmbar-natural": "LLMBar Natural",
    "mt-bench": "MT-Bench human",
}
OTHER = "other"


def source_of(tags: list[str]) -> str:
    """The data source of a case: its known source tag, else ``other``."""
    return next((t for t in tags if t in SOURCES), OTHER)


def rate(k: float, n: int) -> dict[str, Any]:
    """A proportion with its Wilson 95 % interval."""
    lo, hi = wilson_interval(k, n)
    return {"n": n, "k": k, "rate": k / n if n else math.nan, "ci_low": lo, "ci_high": hi}


def controls(run: RunData) -> RunData:
    """The run restricted to the original labelled cases (no probe cases)."""
    keep = [c for c in run.cases if PROBE_TAG not in c.tags]
    ids = {c.id for c in keep}
    tables = {
        VERDICTS: run.verdicts[run.verdicts["case_id"].isin(ids)],
        PAIRS: run.pairs[run.pairs["case_id"].isin(ids)] if not run.pairs.empty else run.pairs,
    }
    return dataclasses.replace(run, _cases=keep, _tables=tables)


def _keys(frame: pd.DataFrame, column: str) -> list[tuple[str, str]]:
    """(case id, ``column``) of each row."""
    return list(zip(frame["case_id"], frame[column], strict=True))


def on_label(frame: pd.DataFrame, run: RunData) -> np.ndarray:
    """Rows judged on their case's labelled principle (any principle when the label names none)."""
    labels = {c.id: c.human_preference.principle for c in run.cases if c.human_preference}
    return np.array([labels.get(c) in (None, p) for c, p in _keys(frame, "principle")], dtype=bool)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


def agreement(run: RunData, seed: int) -> list[dict[str, Any]]:
    """Agreement with the human labels per source and protocol (accuracy, Wilson CI, kappa)."""
    base = controls(run)
    rows = []
    for source in sorted({source_of(c.tags) for c in base.cases}):
        subset = dataclasses.replace(
            base, _cases=[c for c in base.cases if source_of(c.tags) == source]
        )
        table = human_agreement(subset, seed).assign(source=source)
        rows += _records(table)
    return rows


def position(run: RunData) -> dict[str, Any] | None:
    """P(prefer the first shown), tie rate and consistency across orders, on the control pairs."""
    base = controls(run)
    if base.pairs.empty:
        return None
    table = position_bias(base.pairs)
    return _records(table)[0] if len(table) else None


def _lengths(run: RunData) -> dict[tuple[str, str], int]:
    return {(c.id, x.generator): len(x.response) for c in run.cases for x in c.candidates}


def length_bias(run: RunData, seed: int) -> dict[str, Any]:
    """Slope of the pointwise score per 100 characters, and accuracy where people preferred the
    shorter vs the longer answer.
    """
    base = controls(run)
    lengths = _lengths(base)
    scored = base.verdicts[base.verdicts["status"] == "scored"]
    x = np.array([lengths[k] / 100 for k in _keys(scored, "generator")])
    y = scored["score"].astype(float).to_numpy()
    slope = float(np.polyfit(x, y, 1)[0]) if len(x) > 2 and np.ptp(x) > 0 else math.nan
    out: dict[str, Any] = {"n_scores": len(x), "slope_per_100_chars": slope}
    for side in ("shorter", "longer"):
        cases = [c for c in base.cases if _preferred_is(c, side, lengths)]
        table = human_agreement(dataclasses.replace(base, _cases=cases), seed)
        out[f"preferred_{side}"] = _best_protocol(table)
    return out


def _preferred_is(case: Any, side: str, lengths: dict[tuple[str, str], int]) -> bool:
    pref = case.human_preference
    if pref is None:
        return False
    chosen, rejected = lengths.get((case.id, pref.chosen)), lengths.get((case.id, pref.rejected))
    if chosen is None or rejected is None or chosen == rejected:
        return False
    return (chosen < rejected) == (side == "shorter")


PROTOCOL_ORDER = ("both-orders", "pointwise", "single-order")


def _best_protocol(table: pd.DataFrame) -> dict[str, Any] | None:
    """The pooled accuracy of the first protocol the judge has (both orders, else pointwise)."""
    for protocol in PROTOCOL_ORDER:
        rows = table[table["protocol"] == protocol]
        if len(rows):
            n = int(rows["n"].sum())
            hits = float((rows["accuracy"] * rows["n"]).sum())
            return {"protocol": protocol, **rate(hits, n)}
    return None


# --------------------------------------------------------------------------- hack probes


def _probe_frame(run: RunData) -> dict[str, list[str]]:
    by_class: dict[str, list[str]] = {}
    for case in run.cases:
        if case.human_preference is not None:
            by_class.setdefault(probe_class(case.id), []).append(case.id)
    return by_class


def _pointwise_fp(run: RunData, ids: list[str], bad: str) -> dict[str, Any] | None:
    v = run.verdicts
    rows = v[v["case_id"].isin(ids) & (v["generator"] == bad)]
    rows = rows[on_label(rows, run)]
    scored = rows[rows["status"] == "scored"]
    if not len(rows):
        return None
    return {
        **rate(int(scored["passed"].astype(bool).sum()), len(scored)),
        "unscored": len(rows) - len(scored),
    }


def _pair_fp(run: RunData, ids: list[str], good: str, bad: str, seed: int) -> dict[str, Any]:
    """Both orders: the hack preferred or tied after averaging; single: in the seeded order."""
    out: dict[str, Any] = {}
    if run.pairs.empty:
        return out
    pairs = run.pairs[run.pairs["case_id"].isin(ids)]
    combined = combine_orders(pairs)
    both = combined[combined["n_orders"] == 2]
    if len(both):
        p_good = np.where(both["a"] == good, both["p_a"], 1 - both["p_a"].astype(float))
        out["both_orders"] = rate(int((p_good <= 0.5).sum()), len(both))
    scored = pairs[pairs["status"] == "scored"]
    hits, n = 0, 0
    for (case_id, first, second), row in scored.groupby(["case_id", "first", "second"]):
        if (first, second) != single_order(good, bad, seed, str(case_id)):
            continue
        winner = row["winner"].iloc[-1]
        n += 1
        hits += winner == "tie" or (winner == "first") == (first == bad)
    if n:
        out["single_order"] = rate(hits, n)
    return out


def hack_rates(run: RunData, seed: int) -> dict[str, dict[str, Any]]:
    """Per probe class (and the control): false-positive rates pointwise, both and single order."""
    out = {}
    for klass, ids in _probe_frame(run).items():
        if klass == CONTROL:
            continue
        entry: dict[str, Any] = {"pointwise": _pointwise_fp(run, ids, HACK)}
        entry.update(_pair_fp(run, ids, GENUINE, HACK, seed))
        out[klass] = entry
    control_ids = set(_probe_frame(run).get(CONTROL, []))
    control: dict[tuple[str, str], list[str]] = {}
    for case in run.cases:  # generator names differ by suite: group by (chosen, rejected)
        if case.id in control_ids and case.human_preference is not None:
            names = (case.human_preference.chosen, case.human_preference.rejected)
            control.setdefault(names, []).append(case.id)
    out[CONTROL] = _control_rates(run, control, seed)
    order = [*PROBES, CONTROL]
    return {k: out[k] for k in order if k in out}


def _control_rates(
    run: RunData, groups: dict[tuple[str, str], list[str]], seed: int
) -> dict[str, Any]:
    """The undressed poor answer: how often the judge prefers (or passes) the human-rejected one."""
    merged: dict[str, list[float]] = {}
    for (good, bad), ids in groups.items():
        parts = {"pointwise": _pointwise_fp(run, ids, bad), **_pair_fp(run, ids, good, bad, seed)}
        for key, value in parts.items():
            if value:
                k, n = merged.get(key, [0.0, 0])
                merged[key] = [k + value["k"], n + value["n"]]
    return {key: rate(k, int(n)) for key, (k, n) in merged.items()}


# --------------------------------------------------------------------------- calibration


def calibration(run: RunData) -> dict[str, Any]:
    """Pass rates of the answers people preferred vs rejected, per principle, and the share of
    human-preferred answers at each rounded score (the calibration curve).
    """
    base = controls(run)
    v = base.verdicts[base.verdicts["status"] == "scored"]
    side: dict[tuple[str, str], str] = {}
    for c in base.cases:
        if c.human_preference is not None:
            side[(c.id, c.human_preference.chosen)] = "preferred"
            side[(c.id, c.human_preference.rejected)] = "rejected"
    v = v.assign(side=[side.get(k) for k in _keys(v, "generator")])
    v = v[v["side"].notna().to_numpy() & on_label(v, base)]
    per_principle = {}
    for pid, g in v.groupby("principle"):
        per_principle[str(pid)] = {
            s: rate(
                int(g[g["side"] == s]["passed"].astype(bool).sum()), int((g["side"] == s).sum())
            )
            for s in ("preferred", "rejected")
        }
    curve = []
    for score, g in v.groupby(v["score"].astype(float).round()):
        curve.append({"score": float(score), **rate(int((g["side"] == "preferred").sum()), len(g))})
    return {"pass_rates": per_principle, "curve": curve}
