"""The self-contained HTML report of a run.

`render_report` reads a run folder (through :func:`harness.rundir.read_run` only) and writes
``report.html`` beside it. The page opens offline: stylesheet and script are inlined, charts are
inline SVG (drawn by :mod:`harness.report.charts`), and nothing refers to any URL. All model and
judge text goes through Jinja's autoescaping; a Content-Security-Policy that allows only the page's
own script (by hash) is a second line of defence should an unescaped path ever slip in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections import defaultdict
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from harness.analysis.scores import overall, summary
from harness.analysis.triage import MAX_CASES, cases_to_read
from harness.records import Case, HumanPreference
from harness.report.charts import PALETTE, score_chart
from harness.report.sections import sections
from harness.rundir import REPORT, RunData, read_run, write_atomic
from harness.safetext import bounded, for_page

STATUSES = ("scored", "unscored", "error")
RAW_PREVIEW = 400  # characters of a judge's raw answer shown beside an unscored verdict
TEXT_LIMIT = 10_000  # characters of any one text the page shows; the run folder keeps all of it
WHERE_FULL = "the run folder (cases.jsonl, verdicts.jsonl)"


def render_report(run: RunData | Path | str) -> Path:
    """Rebuild ``<run folder>/report.html`` from the run folder alone; returns its path."""
    run = run if isinstance(run, RunData) else read_run(run)
    path = run.root / REPORT
    write_atomic(path, render_html(run))
    return path


def save_comparison(cand: Path, data: dict[str, object]) -> Path:
    """Keep a comparison in the candidate's run folder and rebuild its report with that section."""
    write_atomic(cand / "comparison.json", json.dumps(data, indent=2, allow_nan=False, default=str))
    return render_report(cand)


def render_html(run: RunData) -> str:
    """The report page of a run, as one HTML string."""
    script = _asset("report.js")
    context = _context(run) | {
        "css": Markup(_asset("report.css")),  # our own files, not model text
        "js": Markup(script),
        "csp": _csp(script),
    }
    return _env().get_template("report.html.j2").render(context)


# --------------------------------------------------------------------------- plumbing


@cache
def _env() -> Environment:
    return Environment(
        loader=PackageLoader("harness.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_shown,
    )


def _shown(value: object) -> object:
    """Every value the template prints: control and bidi characters made visible, long text cut.

    Markup (our own SVG and macro output) is not cut, only cleaned: no control character is part of
    HTML syntax, so replacing one cannot break the markup around it.
    """
    if isinstance(value, Markup):
        return Markup(for_page(value))
    if isinstance(value, str):
        return for_page(bounded(value, TEXT_LIMIT, WHERE_FULL))
    return value


@cache
def _asset(name: str) -> str:
    return resources.files("harness.report").joinpath("assets", name).read_text(encoding="utf-8")


def _csp(script: str) -> str:
    """A policy that runs only our own inline script and loads nothing from anywhere."""
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; img-src data:"


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _fmt(value: float | None, digits: int = 2) -> str:
    """A number with fixed decimals, or an en dash when there is none."""
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.0f}%"


# --------------------------------------------------------------------------- context


def _context(run: RunData) -> dict[str, Any]:
    """Everything the template shows, computed once."""
    judges = _judge_order(run)
    generators = _generator_order(run)
    colours = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(generators)}
    table = summary(run.verdicts, run.constitution)
    totals = overall(run.verdicts, run.constitution)
    return {
        "run": run,
        "header": _header(run),
        "judges": [_judge_view(run, j) for j in judges],
        "colours": colours,
        "summary": _summary_views(table, totals, judges, generators),
        "charts": [score_chart(table, run.constitution, j, generators, colours) for j in judges],
        "cases": _case_views(run, judges),
        "max_cases": MAX_CASES,
        "tags": sorted({t for tags in run.case_index["tags"] for t in tags}),
        "sections": sections(run),
    }


def _judge_order(run: RunData) -> list[str]:
    """Judges as the manifest lists them, then any others the verdicts name."""
    listed = [str(c.get("id", "")) for c in run.manifest.judge_configs]
    seen = set(run.verdicts["judge"].unique()) if not run.verdicts.empty else set()
    return [j for j in listed if j in seen] + sorted(seen - set(listed))


def _generator_order(run: RunData) -> list[str]:
    """Generators in order of first appearance among the cases' candidates."""
    order = dict.fromkeys(g for gens in run.case_index["generators"] for g in gens)
    seen = set(run.verdicts["generator"].unique()) if not run.verdicts.empty else set()
    return list(order) + sorted(seen - set(order))


def _header(run: RunData) -> dict[str, Any]:
    counts = (
        run.verdicts["status"].value_counts() if not run.verdicts.empty else pd.Series(dtype=int)
    )
    return {
        "run_id": run.manifest.run_id,
        "suite": run.manifest.suite.path,
        "constitution": f"{run.constitution.id} ({run.manifest.constitution.path})",
        "created": run.manifest.created,
        "status": run.manifest.status,
        "n_cases": len(run.case_index),
        "n_candidates": int(run.case_index["generators"].map(len).sum()),
        "counts": {s: int(counts.get(s, 0)) for s in STATUSES},
    }


def _judge_view(run: RunData, judge: str) -> dict[str, Any]:
    """A judge's id, backend and options (manifests never hold secrets, only variable names)."""
    config = next((c for c in run.manifest.judge_configs if c.get("id") == judge), {})
    options = config.get("options")
    items = options.items() if isinstance(options, dict) else []
    shown = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in items}
    return {
        "id": judge,
        "backend": config.get("backend", "?"),
        "options": shown,
        "description": config.get("description", ""),
    }


def _summary_views(
    table: pd.DataFrame, totals: pd.DataFrame, judges: list[str], generators: list[str]
) -> list[dict[str, Any]]:
    """Per judge: formatted summary rows and weighted overall rows, generators in report order."""
    rank = {g: i for i, g in enumerate(generators)}
    prank = {
        p: i for i, p in enumerate(dict.fromkeys(table["principle"]))
    }  # `summary` has constitution order
    views = []
    for judge in judges:
        records = table[table["judge"] == judge].to_dict("records")
        rows = sorted(records, key=lambda r: (prank[r["principle"]], rank[r["generator"]]))
        best = sorted(
            totals[totals["judge"] == judge].to_dict("records"), key=lambda r: rank[r["generator"]]
        )
        views.append(
            {
                "judge": judge,
                "rows": [_summary_row(r) for r in rows],
                "overall": [_overall_row(r) for r in best],
            }
        )
    return views


def _summary_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "principle": r["principle"],
        "generator": r["generator"],
        "n": int(r["n"]),
        "n_unscored": int(r["n_unscored"]),
        "n_error": int(r["n_error"]),
        "mean": _fmt(r["mean"]),
        "ci": f"{_fmt(r['ci_low'])}–{_fmt(r['ci_high'])}" if not _missing(r["ci_low"]) else "–",
        "pass_rate": _pct(r["pass_rate"]),
        "pass_ci": f"{_pct(r['pass_low'])}–{_pct(r['pass_high'])}"
        if not _missing(r["pass_low"])
        else "–",
        "normalized": _fmt(r["mean_normalized"]),
        "bar": 0 if _missing(r["pass_rate"]) else round(100 * r["pass_rate"]),
    }


def _overall_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "generator": r["generator"],
        "n_cases": int(r["n_cases"]),
        "overall": _fmt(r["overall"]),
        "ci": f"{_fmt(r['ci_low'])}–{_fmt(r['ci_high'])}",
    }


# --------------------------------------------------------------------------- cases


def _case_views(run: RunData, judges: list[str]) -> list[dict[str, Any]]:
    """The cases worth reading first (all of them in a small run), with every verdict's text."""
    chosen = cases_to_read(run.verdicts, list(run.case_index["case_id"]))
    wanted = set(chosen)
    prank = {p.id: i for i, p in enumerate(run.constitution.principles)}
    jrank = {j: i for i, j in enumerate(judges)}
    by_candidate: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in run.verdict_rows(wanted):
        by_candidate[(row["case_id"], row["generator"])].append(row)
    for rows in by_candidate.values():
        rows.sort(
            key=lambda r: (
                prank.get(r["principle"], len(prank)),
                jrank.get(r["judge"], 0),
                r["principle"],
            )
        )
    cases = {c.id: c for c in run.cases_by_id(wanted)}
    return [_case_view(cases[i], by_candidate) for i in chosen if i in cases]


def _case_view(
    case: Case, by_candidate: dict[tuple[str, str], list[dict[str, Any]]]
) -> dict[str, Any]:
    human = case.human_preference
    candidates: list[dict[str, Any]] = [
        {
            "generator": cand.generator,
            "response": cand.response,
            "verdicts": [_verdict_view(r) for r in by_candidate.get((case.id, cand.generator), [])],
            "human": _human_label(cand.generator, human),
        }
        for cand in case.candidates
    ]
    issues = sorted({v["flag"] for c in candidates for v in c["verdicts"] if v["flag"]})
    return {
        "id": case.id,
        "anchor": "case-" + "_".join(case.id.split()),
        "tags": case.tags,
        "messages": case.messages(),
        "reference": case.reference,
        "human": human,
        "candidates": candidates,
        "issues": " ".join(issues),
    }


def _human_label(generator: str, human: HumanPreference | None) -> str | None:
    """'chosen' or 'rejected' when a human label names this generator."""
    if human is None:
        return None
    return {human.chosen: "chosen", human.rejected: "rejected"}.get(generator)


def _verdict_view(r: dict[str, Any]) -> dict[str, Any]:
    """One verdict, formatted: score, pass/fail, distribution bars, and the words that explain it."""
    status = r["status"]
    passed = None if status != "scored" or _missing(r["passed"]) else bool(r["passed"])
    flag = status if status != "scored" else ("fail" if passed is False else "")
    raw = r["raw_output"] or ""
    return {
        "principle": r["principle"],
        "judge": r["judge"],
        "status": status,
        "score": _fmt(r["score"]) if status == "scored" else "–",
        "passed": passed,
        "flag": flag,
        "dist": _distribution(r["distribution"]),
        "rationale": r["rationale"] or "",
        "reason": r["reason"] or "",
        "raw": raw[:RAW_PREVIEW] + ("…" if len(raw) > RAW_PREVIEW else "")
        if status != "scored"
        else "",
    }


def _distribution(dist: object) -> list[dict[str, Any]]:
    """Bars for P(score = k), k = 1..N, scaled so the likeliest score fills the height."""
    if dist is None or isinstance(dist, float):  # None, or NaN from a column where no row had one
        return []
    probs = [float(p) for p in dist]  # type: ignore[attr-defined]
    peak = max(probs, default=0.0) or 1.0
    return [
        {"k": k, "p": f"{p:.2f}", "h": round(100 * p / peak)} for k, p in enumerate(probs, start=1)
    ]
