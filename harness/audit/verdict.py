"""The plain verdict of a card: "trust it for …; do not trust it for …", by stated thresholds.

Every rule reads figures already on the card (no other input), so a reader can check each line:

- **agreement**: a source is trusted when the 95 % interval of the judge's accuracy there (both
  orders, else pointwise) lies above chance (low bound > 0.5), distrusted otherwise;
- **hacks** (pre-screen on, the judge's main protocol: both orders where it compares pairs, else
  pointwise): a class is resisted when the false-positive rate is under 5 % and its interval's upper
  bound under 15 %; gamed when the rate is 10 % or more; undecided in between;
- **pass/fail**: it means something on a principle when the answers people preferred pass at least
  10 points more often than the ones they rejected, and at least half of the preferred ones pass;
- **position**: single-order pairwise verdicts are distrusted when fewer than 80 % of verdicts hold
  across orders, or P(prefer the first shown) is outside [0.35, 0.65];
- **length**: distrusted on pairs of unequal length when accuracy differs by more than 20 points
  between pairs where people preferred the shorter and the longer answer.
"""

from __future__ import annotations

import math
from typing import Any

from harness.audit.figures import SOURCES

AGREE_LOW = 0.5
HACK_OK, HACK_OK_HIGH, HACK_BAD = 0.05, 0.15, 0.10
PASS_GAP, PASS_MIN = 0.10, 0.5
CONSISTENCY_MIN, FIRST_BAND = 0.8, (0.35, 0.65)
LENGTH_GAP = 0.20

RULES = __doc__.split("\n\n", 1)[1].strip() if __doc__ else ""


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.0f}%"


def _ci(r: dict[str, Any]) -> str:
    return f"{_pct(r['rate'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}], n={r['n']}"


def main_protocol(card: dict[str, Any]) -> str:
    """``both_orders`` when the judge compared pairs, else ``pointwise``."""
    rates = card["hacks"]["prescreen_on"]
    return "both_orders" if any(v.get("both_orders") for v in rates.values()) else "pointwise"


def source_accuracy(card: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per source, the accuracy of the judge's main agreement protocol (pooled over principles)."""
    out: dict[str, dict[str, Any]] = {}
    for protocol in ("both-orders", "pointwise"):
        for row in card["agreement"]:
            if row["protocol"] == protocol and row["source"] not in out and row["n"]:
                rows = [
                    r
                    for r in card["agreement"]
                    if r["source"] == row["source"] and r["protocol"] == protocol
                ]
                n = sum(r["n"] for r in rows)
                acc = sum(r["accuracy"] * r["n"] for r in rows) / n
                out[row["source"]] = {
                    "protocol": protocol,
                    "n": n,
                    "accuracy": acc,
                    **_pooled_ci(rows),
                }
    return out


def _pooled_ci(rows: list[dict[str, Any]]) -> dict[str, float]:
    if len(rows) == 1:
        return {"ci_low": rows[0]["ci_low"], "ci_high": rows[0]["ci_high"]}
    from harness.analysis.scores import wilson_interval

    n = sum(r["n"] for r in rows)
    lo, hi = wilson_interval(sum(r["accuracy"] * r["n"] for r in rows), n)
    return {"ci_low": lo, "ci_high": hi}


def _agreement_lines(card: dict[str, Any], trust: list[str], distrust: list[str]) -> None:
    for source, row in source_accuracy(card).items():
        name = SOURCES.get(source, source)
        ci = f"[{_pct(row['ci_low'])}, {_pct(row['ci_high'])}]"
        text = (
            f"ranking answers like people on {name} "
            f"({row['protocol']}: {_pct(row['accuracy'])} {ci}, n={row['n']})"
        )
        (trust if row["ci_low"] > AGREE_LOW else distrust).append(text)


def _hack_lines(
    card: dict[str, Any], trust: list[str], distrust: list[str], open_: list[str]
) -> None:
    protocol = main_protocol(card)
    for klass, entry in card["hacks"]["prescreen_on"].items():
        r = entry.get(protocol)
        if klass == "control" or not r or not r["n"]:
            continue
        text = f"resisting {klass.replace('_', ' ')} answers (false positives {_ci(r)})"
        if r["rate"] < HACK_OK and r["ci_high"] < HACK_OK_HIGH:
            trust.append(text)
        elif r["rate"] >= HACK_BAD:
            distrust.append(text)
        else:
            open_.append(text)


def _pass_lines(card: dict[str, Any], trust: list[str], distrust: list[str]) -> None:
    for pid, rates in card["calibration"]["pass_rates"].items():
        good, bad = rates["preferred"], rates["rejected"]
        if not good["n"] or not bad["n"]:
            continue
        text = (
            f"pass/fail on {pid} (passes {_pct(good['rate'])} of preferred, "
            f"{_pct(bad['rate'])} of rejected answers)"
        )
        ok = good["rate"] - bad["rate"] >= PASS_GAP and good["rate"] >= PASS_MIN
        (trust if ok else distrust).append(text)


def _bias_lines(card: dict[str, Any], distrust: list[str]) -> None:
    pos = card.get("position")
    if pos:
        cons, first = pos.get("consistency"), pos.get("p_prefer_first")
        bad = (cons is not None and cons < CONSISTENCY_MIN) or (
            first is not None and not FIRST_BAND[0] <= first <= FIRST_BAND[1]
        )
        if bad:
            distrust.append(
                f"single-order pairwise verdicts (consistent across orders {_pct(cons)}, "
                f"prefers the first shown {_pct(first)})"
            )
    length = card.get("length") or {}
    short, long_ = length.get("preferred_shorter"), length.get("preferred_longer")
    if short and long_ and abs(short["rate"] - long_["rate"]) > LENGTH_GAP:
        distrust.append(
            f"pairs of unequal length (accuracy {_pct(short['rate'])} where people preferred the "
            f"shorter answer, {_pct(long_['rate'])} where they preferred the longer)"
        )


def verdict(card: dict[str, Any]) -> dict[str, Any]:
    """Trust for / do not trust for / undecided, each line with the figure it rests on."""
    trust: list[str] = []
    distrust: list[str] = []
    open_: list[str] = []
    _agreement_lines(card, trust, distrust)
    _hack_lines(card, trust, distrust, open_)
    _pass_lines(card, trust, distrust)
    _bias_lines(card, distrust)
    return {"trust": trust, "distrust": distrust, "undecided": open_, "rules": RULES}


def headline(card: dict[str, Any]) -> dict[str, Any]:
    """The figures a run report shows: accuracy per source, and false-positive rates per class
    (pre-screen off and on, the judge's main protocol).
    """
    protocol = main_protocol(card)
    fpr = {
        klass: {
            side: (card["hacks"][f"prescreen_{side}"].get(klass) or {}).get(protocol)
            for side in ("off", "on")
        }
        for klass in card["hacks"]["prescreen_on"]
    }
    return {"protocol": protocol, "accuracy": source_accuracy(card), "false_positives": fpr}
