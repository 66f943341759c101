"""Optional analysis sections of the report: each is a titled table computed from the run folder.

A section appears only when the run holds what it needs (pairwise judgments, human labels, a
comparison, revisions). Every number comes from a named function of :mod:`harness.analysis`, so it
can be recomputed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from harness.report.charts import bar_chart, line_chart, si
from harness.rundir import RunData


@dataclass
class Section:
    """A titled table for the report."""

    id: str
    title: str
    note: str
    columns: list[str]
    rows: list[list[str]]
    source: str
    figures: list[tuple[str, Markup]] = field(default_factory=list)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3f}"
    if value is None:
        return "–"
    return str(value)


def table_section(
    sid: str, title: str, note: str, frame: pd.DataFrame, source: str
) -> Section | None:
    """A section from a DataFrame (None when the frame is empty)."""
    if frame is None or frame.empty:
        return None
    rows = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    return Section(sid, title, note, [str(c) for c in frame.columns], rows, source)


def _agreement(run: RunData) -> Section | None:
    if not run.case_index["labelled"].any():
        return None
    from harness.analysis.agreement import human_agreement

    note = (
        "Judge vs human preference labels. single-order: one seeded order per pair; both-orders: the two "
        "orders' probabilities averaged; soft: the probability given to the human's choice; pointwise: the "
        "higher score wins. Accuracy with a 95% interval (Wilson; bootstrap for soft) and Cohen's kappa."
    )
    return table_section(
        "agreement",
        "Agreement with human labels",
        note,
        human_agreement(run),
        "harness.analysis.agreement.human_agreement",
    )


def _rating_agreement(run: RunData) -> Section | None:
    index = run.case_index
    if "rated" in index and not index["rated"].any():
        return None
    from harness.analysis.agreement import human_rating_agreement

    note = (
        "Judge pointwise scores vs the candidates' human ratings (mean over raters). "
        "pair_accuracy: over every two candidates of one case whose ratings differ, the share the "
        "judge orders the same way (a judge tie counts half; chance is 0.5). spearman, kendall "
        "(tau-b): correlation over all rated candidates (chance is 0). 95% CIs by a bootstrap over "
        "cases. baseline:reply-length scores each reply by its length in words."
    )
    return table_section(
        "rating-agreement",
        "Agreement with human ratings",
        note,
        human_rating_agreement(run),
        "harness.analysis.agreement.human_rating_agreement",
    )


def _position(run: RunData) -> Section | None:
    if run.pairs.empty:
        return None
    from harness.analysis.pairwise import position_bias

    note = (
        "Pairwise judgments: how often the first-shown response was preferred (0.5 is unbiased), mean "
        "P(first better), tie rate, and the share of pairs whose verdict held when the order was swapped."
    )
    return table_section(
        "position",
        "Pairwise position bias",
        note,
        position_bias(run.pairs),
        "harness.analysis.pairwise.position_bias",
    )


def _win_probability(run: RunData) -> Section | None:
    if run.pairs.empty:
        return None
    from harness.analysis.pairwise import combine_orders, soft_wins

    wins = soft_wins(combine_orders(run.pairs))
    table = wins.groupby(["judge", "principle", "generator"], as_index=False, sort=False).agg(
        cases=("case_id", "nunique"), mean_p_win=("p_win", "mean")
    )
    note = "Mean probability that a generator's response beats the others in its case (orders combined)."
    return table_section(
        "wins", "Pairwise win probability", note, table, "harness.analysis.pairwise.soft_wins"
    )


def _revisions(run: RunData) -> Section | None:
    path = run.root / "revisions.jsonl"
    if not path.exists():
        return None
    rows = [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return None
    table = frame.groupby("principle", as_index=False).agg(
        targets=("status", "size"),
        revised=("status", lambda s: int((s == "ok").sum())),
        confirmed_better=("confirmed", lambda s: int((s == True).sum())),  # noqa: E712
    )
    note = "Critique → revision: candidates revised per principle, and how many re-judging confirmed better."
    return table_section("revisions", "Critique and revision", note, table, "revisions.jsonl")


def _comparison(run: RunData) -> Section | None:
    path = run.root / "comparison.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    frame = pd.DataFrame(data.get("rows", []))
    warnings = " ".join(f"Warning: {w}" for w in data.get("warnings", []))
    note = (
        f"This run compared with baseline {data.get('base')} by `harness compare` (paired by case): "
        f"{data.get('n_regressions', 0)} regression(s) flagged. {warnings}"
    )
    return table_section(
        "comparison",
        "Comparison with the baseline",
        note,
        frame,
        "harness.analysis.compare.compare_runs",
    )


def _scaling(run: RunData) -> Section | None:
    from harness.analysis.stats import generator_parameters, scaling_fit

    params = generator_parameters(run)
    scored = run.verdicts[run.verdicts["status"] == "scored"]
    if len([g for g in scored["generator"].unique() if params.get(g)]) < 3:
        return None
    rows, figures = [], []
    for (judge, principle), group in scored.groupby(["judge", "principle"], sort=False):
        fit, curve = scaling_fit(group, params)
        if curve.empty:
            continue
        rows.append({"judge": judge, "principle": principle, **fit})
        means = group.groupby("generator")["score"].mean()
        points = [
            (float(np.log10(params[g])), float(m), g) for g, m in means.items() if params.get(g)
        ]
        figures.append(
            (
                f"{judge} · {principle}",
                line_chart(
                    curve["log10_parameters"],
                    curve["fit"],
                    curve["lo"],
                    curve["hi"],
                    points=points,
                    xlabel="log10 parameters",
                    ylabel="mean score",
                    title=f"{judge} {principle} scaling",
                ),
            )
        )
    section = table_section(
        "scaling",
        "Score against model size",
        "Least-squares fit of each generator's mean "
        "score on log10(parameters), slope per tenfold size with a case-bootstrap 95% CI.",
        pd.DataFrame(rows),
        "harness.analysis.stats.scaling_fit",
    )
    if section is not None:
        section.figures = figures
    return section


def _thin(curve: pd.DataFrame, points: int = 200) -> pd.DataFrame:
    """At most ``points`` rows of a curve, evenly spaced in log n, the last row kept.

    The early part moves most; a chart of 100,000 verdicts needs no 100,000 vertices.
    """
    if len(curve) <= points:
        return curve
    at = np.unique(np.geomspace(1, len(curve), points).astype(int) - 1)
    return curve.iloc[at]


#: Convergence charts drawn: the least settled principle × generator series (widest final interval).
CONVERGENCE_CHARTS = 4


def _convergence(run: RunData) -> Section | None:
    from harness.analysis.sequential import convergence_curve

    # cases.jsonl holds the planned (judging) order
    order = pd.Index(run.case_index["case_id"])
    keys = ["judge", "principle", "generator"]
    verdicts = run.verdicts
    scored = verdicts.loc[verdicts["status"] == "scored", [*keys, "case_id", "normalized"]]
    if scored.empty or len(order) < 5:
        return None
    scored["pos"] = order.get_indexer(scored["case_id"])  # a hash lookup per row, in C
    curves, rows = [], []
    for key, g in scored.sort_values("pos").groupby(keys, sort=False):
        curve = convergence_curve(g["normalized"].to_numpy(dtype=float))
        last = curve.iloc[-1]
        curve = _thin(curve)
        row = dict(zip(keys, key, strict=True))
        n, estimate, half = int(last["n"]), float(last["estimate"]), float(last["half_width"])
        rows.append({**row, "n": n, "estimate": estimate, "half_width": half})
        curves.append((half, " · ".join(row.values()), curve))
    widest = sorted(curves, key=lambda c: -c[0])[:CONVERGENCE_CHARTS]
    note = (
        "Running mean of the normalized score with its anytime-valid 95% confidence sequence "
        "(empirical Bernstein), in judging order; `--target-ci W` stops a principle × generator "
        f"once the half-width < W. Charts: the {len(widest)} of {len(curves)} series with the "
        "widest final interval (the least settled)."
    )
    section = table_section(
        "convergence",
        "Convergence",
        note,
        pd.DataFrame(rows),
        "harness.analysis.sequential.convergence_curve",
    )
    if section is not None:
        section.figures = [(name, _convergence_chart(name, c)) for _, name, c in widest]
    return section


def _convergence_chart(name: str, curve: pd.DataFrame) -> Markup:
    """The running estimate and its confidence band against the number of verdicts."""
    return line_chart(
        curve["n"],
        curve["estimate"],
        curve["lo"],
        curve["hi"],
        xlabel="verdicts (n)",
        ylabel="normalized score",
        title=f"{name} convergence",
    )


def _judges(run: RunData) -> Section | None:
    from harness.analysis.judges import judge_profile, preference_agreement

    profile = judge_profile(run)
    if len(profile) < 2:
        return None
    agree = preference_agreement(run)
    table = profile.copy()
    for col in ("parameters", "trained_parameters"):  # counts, not floats ("–" when unknown)
        table[col] = [None if pd.isna(v) else f"{int(v):,}" for v in table[col]]
    for other in profile["judge"]:
        pairs = agree[(agree["judge_a"] == other) | (agree["judge_b"] == other)]
        by = {
            (r.judge_b if r.judge_a == other else r.judge_a): r.agreement
            for r in pairs.itertuples()
        }
        table[f"agrees_with_{other}"] = [by.get(j, math.nan) for j in table["judge"]]
    note = (
        "Each judge's size (parameters; trained = fitted for judging, e.g. a distilled student's heads), its "
        "speed in this run (judgments made, cache hits excluded, per second of judge time), how often its "
        "pointwise scores pick the human-preferred candidate (95% Wilson CI; 0.5 is chance), and how often two "
        "judges prefer the same candidate of a case on a principle (agrees_with_*)."
    )
    section = table_section(
        "judge-comparison",
        "Judges side by side: size, cost, agreement",
        note,
        table,
        "harness.analysis.judges.judge_profile, preference_agreement",
    )
    if section is not None:
        section.figures = _judge_figures(profile, agree)
    return section


def _audits(run: RunData) -> Section | None:
    """Each judge's report card on record (``harness audit``), matched by its exact identity hash."""
    from harness.audit_store import read_run_audits

    found = read_run_audits(run.root)
    if not found:
        return None
    classes: list[str] = []
    for entry in found.values():
        fp = ((entry.get("card") or {}).get("headline") or {}).get("false_positives") or {}
        classes += [k for k in fp if k not in classes]
    rows = [_audit_row(judge, entry, classes) for judge, entry in sorted(found.items())]
    note = (
        "From each judge's report card (harness audit), found by the judge's identity hash. "
        "False-positive rate of each hack probe class (the hack preferred or tied, or passed "
        "pointwise), with the pre-screen off -> on, in the card's main protocol; the verdict lines "
        "follow the card's stated thresholds. 'not audited': run harness audit --judge J."
    )
    columns = ["judge", "identity", "audited", "protocol", *classes, "trust it for", "do not trust"]
    return Section("judge-audits", "Judge report cards", note, columns, rows, "harness audit")


def _audit_row(judge: str, entry: dict[str, Any], classes: list[str]) -> list[str]:
    card = entry.get("card")
    if not card:
        return [judge, entry.get("identity", ""), "not audited", *["–"] * (len(classes) + 3)]
    head = card.get("headline") or {}
    fp = head.get("false_positives") or {}

    def pair(k: str) -> str:
        sides = fp.get(k) or {}
        return " -> ".join(_cell((sides.get(s) or {}).get("rate", math.nan)) for s in ("off", "on"))

    verdict = card.get("verdict") or {}
    return [
        judge,
        entry.get("identity", ""),
        str(card.get("created", "")),
        str(head.get("protocol", "")),
        *[pair(k) for k in classes],
        "; ".join(verdict.get("trust", [])) or "nothing",
        "; ".join(verdict.get("distrust", [])) or "nothing",
    ]


def _judge_figures(profile: pd.DataFrame, agree: pd.DataFrame) -> list[tuple[str, Markup]]:
    labels = list(profile["judge"])
    sizes = [(j, v) for j, v in zip(labels, profile["parameters"], strict=True)]
    sizes += [
        (f"{j}: trained", v)
        for j, v in zip(labels, profile["trained_parameters"], strict=True)
        if not pd.isna(v)
    ]
    figures = [
        (
            "parameters",
            bar_chart(
                [j for j, _ in sizes],
                [math.nan if pd.isna(v) else float(v) for _, v in sizes],
                title="parameters per judge",
                xlabel="parameters (log10 axis)",
                log=True,
                fmt=si,
            ),
        ),
        (
            "judgments per second",
            bar_chart(
                labels,
                list(profile["judgments_per_s"].astype(float)),
                log=True,
                title="judgments per second",
                xlabel="judgments/s (log10 axis)",
            ),
        ),
    ]
    if profile["human_n"].sum() > 0:
        figures.append(
            (
                "agreement with human labels",
                bar_chart(
                    labels,
                    list(profile["human_accuracy"].astype(float)),
                    lo=list(profile["human_ci_low"].astype(float)),
                    hi=list(profile["human_ci_high"].astype(float)),
                    reference=0.5,
                    fmt="{:.2f}",
                    title="agreement with human labels",
                    xlabel="accuracy (dashed: chance)",
                ),
            )
        )
    if not agree.empty:
        figures.append(
            (
                "agreement between judges",
                bar_chart(
                    [f"{a}~{b}" for a, b in zip(agree["judge_a"], agree["judge_b"], strict=True)],
                    list(agree["agreement"].astype(float)),
                    lo=list(agree["ci_low"].astype(float)),
                    hi=list(agree["ci_high"].astype(float)),
                    fmt="{:.2f}",
                    title="same preference",
                    xlabel="share of candidate pairs judged alike",
                ),
            )
        )
    return figures


BUILDERS: list[Callable[[RunData], Section | None]] = [
    _comparison,
    _agreement,
    _rating_agreement,
    _judges,
    _audits,
    _position,
    _win_probability,
    _revisions,
    _scaling,
    _convergence,
]


def sections(run: RunData) -> list[Section]:
    """Every optional section this run has data for."""
    return [s for s in (build(run) for build in BUILDERS) if s is not None]
