"""Compare two runs judged on the same suite, matched by case, and flag regressions.

For each principle × judge the candidate run's scores are paired with the baseline's case by case
(and generator by generator when both runs hold the same generators; a run with one generator is
paired with the other run's one generator). Per case the scores are averaged over generators, so a
case, the unit that was sampled, counts once.

* **Scores.** delta = mean over cases of (cand - base), in rubric points and as a fraction of the
  scale (``delta_norm``). Its CI is a paired percentile bootstrap over cases at level 1 - alpha;
  ``p_value`` is a one-sided paired permutation (sign-flip) test of "the candidate scores lower"
  (exact for few cases).
* **Pass/fail.** McNemar's test on the (case, generator) units' pass/fail pairs, one-sided for "the
  candidate passes less" (exact binomial for up to 25 discordant pairs).
* **Regression.** ``max_drop`` is the tolerated drop as a fraction of the rubric scale (0.05 = 5 %
  of 1..N, 0.2 points on a 1..5 rubric) or, with ``metric="pass_rate"``, of the pass rate.
  ``gate_p`` is the one-sided sign-flip p-value of H0 "the drop is at most max_drop" (per-case
  differences shifted by max_drop; with max_drop 0 it is ``p_value``, or for pass rates McNemar's
  exact test on cases). A principle × judge regresses when its observed drop exceeds max_drop AND
  gate_p < alpha, so the false-alarm rate is at most about alpha even for a true drop of exactly
  max_drop. ``adjust="holm"`` Holm-adjusts gate_p across the principle × judge rows (family-wise
  control).

Warnings (never regressions) say when the constitution or a judge config differs between the runs
(by their sha256 in the manifests), when package versions differ, when cases are missing from one
run or their prompts differ, so a judge change is not mistaken for a model change.
"""

from __future__ import annotations

import functools
import json
import math
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from harness.analysis.scores import scored
from harness.analysis.stats import mcnemar, paired_bootstrap_ci, paired_permutation_test
from harness.errors import RunError
from harness.records import Constitution
from harness.rundir import RunData
from harness.safetext import md_code

ROW_COLUMNS = [
    "principle",
    "judge",
    "n_cases",
    "base_mean",
    "cand_mean",
    "delta",
    "delta_norm",
    "ci_low",
    "ci_high",
    "p_value",
    "n_units",
    "base_pass",
    "cand_pass",
    "pass_delta",
    "b",
    "c",
    "mcnemar_p",
    "gate_p",
    "regression",
    "status",
]
UNIT = ["judge", "principle", "case_id", "generator"]


@dataclass
class CompareOptions:
    """How to decide a regression."""

    max_drop: float = 0.0
    alpha: float = 0.05
    metric: Literal["score", "pass_rate"] = "score"
    adjust: Literal["none", "holm"] = "none"
    n_boot: int = 2000
    n_perm: int = 5000
    seed: int = 0


@dataclass
class Comparison:
    """The outcome of a comparison: one row per principle × judge, plus warnings."""

    base: str
    cand: str
    rows: pd.DataFrame
    options: CompareOptions = field(default_factory=CompareOptions)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data for the HTML report (NaN as None)."""
        records = json.loads(self.rows.to_json(orient="records"))
        return {
            "base": self.base,
            "cand": self.cand,
            "options": asdict(self.options),
            "warnings": self.warnings,
            "notes": self.notes,
            "n_regressions": int(self.rows["regression"].sum()),
            "rows": records,
        }


# --------------------------------------------------------------------------- matching


def _pick(frame: pd.DataFrame, generator: str | None, which: str) -> pd.DataFrame:
    if generator is None:
        return frame
    if generator not in set(frame["generator"].unique()):
        raise RunError(f"{which} run has no generator {generator!r}")
    return frame[frame["generator"] == generator].assign(generator="*")


def align_generators(
    base: pd.DataFrame,
    cand: pd.DataFrame,
    base_generator: str | None = None,
    cand_generator: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The two verdict tables restricted to generators that pair up, and notes on what was paired."""
    if base_generator or cand_generator:
        b, c = _pick(base, base_generator, "base"), _pick(cand, cand_generator, "candidate")
        return (
            b,
            c,
            [
                f"comparing generator {base_generator or 'all'} (base) with {cand_generator or 'all'} (cand)"
            ],
        )
    gb, gc = set(base["generator"].unique()), set(cand["generator"].unique())
    shared = gb & gc
    if shared:
        notes = [
            f"generators only in {w}: {', '.join(sorted(s))}"
            for w, s in (("base", gb - gc), ("cand", gc - gb))
            if s
        ]
        return base[base["generator"].isin(shared)], cand[cand["generator"].isin(shared)], notes
    if len(gb) == 1 and len(gc) == 1:
        note = f"comparing generator {next(iter(gb))} (base) with {next(iter(gc))} (cand)"
        return base.assign(generator="*"), cand.assign(generator="*"), [note]
    raise RunError(
        f"the runs share no generator (base: {sorted(gb)}, cand: {sorted(gc)}); "
        "choose one of each with --base-generator and --cand-generator"
    )


def paired_units(
    base: pd.DataFrame, cand: pd.DataFrame, base_c: Constitution, cand_c: Constitution
) -> pd.DataFrame:
    """One row per (judge, principle, case, generator) scored in both runs: score, normalized,
    passed of each.
    """
    cols = ["score", "normalized", "passed"]
    keep = [*UNIT, "status", *cols]  # only these: scoring copies the rows it keeps
    b = scored(base[keep], base_c).groupby(UNIT)[cols].mean()
    c = scored(cand[keep], cand_c).groupby(UNIT)[cols].mean()
    return b.add_suffix("_base").join(c.add_suffix("_cand"), how="inner").reset_index()


# --------------------------------------------------------------------------- statistics


CASE_COLS = [
    "score_base",
    "score_cand",
    "normalized_base",
    "normalized_cand",
    "passed_base",
    "passed_cand",
]


def _group_stats(
    case: np.ndarray, flips: tuple[int, ...], options: CompareOptions
) -> dict[str, Any]:
    """Statistics of one principle × judge.

    From its per-case means (columns of CASE_COLS) and its units' (n_units, b, c) pass/fail counts.
    """
    sb, sc, nb, nc, pb, pc = case.T
    p_less = functools.partial(
        paired_permutation_test, alternative="less", n_perm=options.n_perm, seed=options.seed
    )
    lo, hi = paired_bootstrap_ci(
        sb, sc, n_boot=options.n_boot, seed=options.seed, level=1 - options.alpha
    )
    gate_base, gate_cand = (nb, nc) if options.metric == "score" else (pb, pc)
    n_units, b, c = flips
    return {
        "n_cases": len(case),
        "base_mean": sb.mean(),
        "cand_mean": sc.mean(),
        "delta": (sc - sb).mean(),
        "delta_norm": (nc - nb).mean(),
        "ci_low": lo,
        "ci_high": hi,
        "p_value": p_less(sb, sc),
        "n_units": n_units,
        "base_pass": pb.mean(),
        "cand_pass": pc.mean(),
        "pass_delta": (pc - pb).mean(),
        "b": b,
        "c": c,
        "mcnemar_p": mcnemar(b, c, alternative="less"),
        # H0: the drop is at most max_drop (for max_drop 0 and pass rates: McNemar's exact test)
        "gate_p": p_less(gate_base - options.max_drop, gate_cand),
    }


def holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (NaNs stay NaN)."""
    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out


def _gate(rows: pd.DataFrame, options: CompareOptions) -> pd.DataFrame:
    """Add regression and status to the per-row statistics (Holm-adjusting gate_p when asked)."""
    drop = -rows["delta_norm"] if options.metric == "score" else -rows["pass_delta"]
    if options.adjust == "holm":
        rows = rows.assign(gate_p=holm(rows["gate_p"].to_numpy(float)))
    rows["regression"] = (drop > options.max_drop) & (rows["gate_p"] < options.alpha)
    rows["status"] = np.where(
        rows["n_cases"] < 2, "no data", np.where(rows["regression"], "regression", "ok")
    )
    return rows


def compare_units(
    units: pd.DataFrame, options: CompareOptions, principle_order: list[str] | None = None
) -> pd.DataFrame:
    """Per principle × judge statistics and the regression flag, from :func:`paired_units` rows."""
    keys = ["principle", "judge"]
    units = units.assign(
        passed_base=units["passed_base"] >= 0.5, passed_cand=units["passed_cand"] >= 0.5
    )
    per_case = units.groupby([*keys, "case_id"], sort=True)[CASE_COLS].mean()
    values = per_case.to_numpy(float)
    counts = (
        units.assign(
            n=1,
            b=units["passed_base"] & ~units["passed_cand"],
            c=~units["passed_base"] & units["passed_cand"],
        )
        .groupby(keys)[["n", "b", "c"]]
        .sum()
    )
    flips = dict(zip(counts.index, counts.to_numpy(int).tolist(), strict=True))
    rows = [
        {
            "principle": key[0],
            "judge": key[1],
            **_group_stats(values[index], tuple(flips[key]), options),
        }
        for key, index in per_case.groupby(level=keys).indices.items()
    ]
    frame = _gate(
        pd.DataFrame(rows, columns=[c for c in ROW_COLUMNS if c not in ("regression", "status")]),
        options,
    )
    if principle_order:
        rank = {p: i for i, p in enumerate(principle_order)}
        frame = frame.assign(_r=frame["principle"].map(rank).fillna(len(rank))).sort_values(
            ["_r", "judge"]
        )
        frame = frame.drop(columns="_r")
    return frame.reset_index(drop=True)[ROW_COLUMNS]


# --------------------------------------------------------------------------- runs


def input_warnings(base: RunData, cand: RunData) -> list[str]:
    """Differences between the runs' judges, constitution, package versions and cases."""
    out = []
    bm, cm = base.manifest, cand.manifest
    if bm.constitution.sha256 != cm.constitution.sha256:
        out.append(
            f"the constitution differs (base {bm.constitution.sha256[:12]}, cand {cm.constitution.sha256[:12]}):"
            " score changes may come from the rubric, not the model"
        )
    bj, cj = _judge_hashes(base), _judge_hashes(cand)
    for judge in sorted(set(bj) & set(cj)):
        if bj[judge] != cj[judge]:
            out.append(
                f"judge {judge!r} differs (base {bj[judge][:12]}, cand {cj[judge][:12]}): "
                "score changes may come from the judge, not the model"
            )
    changed = {
        k: (v, cm.versions[k])
        for k, v in bm.versions.items()
        if k in cm.versions and cm.versions[k] != v
    }
    if changed:
        out.append(
            "package versions differ: "
            + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in sorted(changed.items()))
        )
    return out + _case_warnings(base, cand)


def _judge_hashes(run: RunData) -> dict[str, str]:
    ids = [str(c.get("id")) for c in run.manifest.judge_configs]
    return {j: rec.sha256 for j, rec in zip(ids, run.manifest.judges, strict=False)}


def _case_warnings(base: RunData, cand: RunData) -> list[str]:
    bp = dict(zip(base.case_index["case_id"], base.case_index["prompt_sha"], strict=True))
    cp = dict(zip(cand.case_index["case_id"], cand.case_index["prompt_sha"], strict=True))
    out = [
        f"{len(s)} case(s) only in {w}: {', '.join(sorted(s)[:5])}{' ...' if len(s) > 5 else ''}"
        for w, s in (("base", set(bp) - set(cp)), ("cand", set(cp) - set(bp)))
        if s
    ]
    differ = [k for k in set(bp) & set(cp) if bp[k] != cp[k]]
    if differ:
        out.append(
            f"{len(differ)} matched case(s) have different prompts (e.g. {sorted(differ)[0]!r}): "
            "the runs may not be of the same suite"
        )
    return out


def compare_runs(
    base: RunData,
    cand: RunData,
    options: CompareOptions | None = None,
    *,
    base_generator: str | None = None,
    cand_generator: str | None = None,
) -> Comparison:
    """Compare two run folders' verdicts case by case; raises RunError when nothing can be paired."""
    options = options or CompareOptions()
    b, c, notes = align_generators(base.verdicts, cand.verdicts, base_generator, cand_generator)
    units = paired_units(b, c, base.constitution, cand.constitution)
    if units.empty:
        raise RunError(
            f"no scored verdicts pair up between {base.root} and {cand.root} "
            "(same case, principle, judge and generator)"
        )
    rows = compare_units(units, options, [p.id for p in base.constitution.principles])
    jb, jc = set(base.verdicts["judge"].unique()), set(cand.verdicts["judge"].unique())
    notes += [
        f"judges only in {w}: {', '.join(sorted(s))} (not compared)"
        for w, s in (("base", jb - jc), ("cand", jc - jb))
        if s
    ]
    return Comparison(
        base.manifest.run_id, cand.manifest.run_id, rows, options, input_warnings(base, cand), notes
    )


# --------------------------------------------------------------------------- outputs


def _f(x: Any, spec: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _p(x: float) -> str:
    return "-" if math.isnan(x) else "<0.001" if x < 0.001 else f"{x:.3f}"


def _cells(r: Any, gate: bool) -> dict[str, str]:
    extra = {"gate p": _p(r.gate_p)} if gate else {}
    return {
        "n": str(r.n_cases),
        "base": _f(r.base_mean),
        "cand": _f(r.cand_mean),
        "delta": f"{_f(r.delta, '+.2f')} [{_f(r.ci_low, '+.2f')}, {_f(r.ci_high, '+.2f')}]",
        "delta %scale": _f(100 * r.delta_norm, "+.1f"),
        "p": _p(r.p_value),
        "pass": f"{_f(100 * r.base_pass, '.0f')}% -> {_f(100 * r.cand_pass, '.0f')}%",
        "mcnemar p": _p(r.mcnemar_p),
        **extra,
    }


def _shows_gate(options: CompareOptions) -> bool:
    """Whether the gate's p-value differs from the p and McNemar p columns, so it needs its own
    column.
    """
    return options.max_drop > 0 or options.adjust == "holm" or options.metric == "pass_rate"


def _headline(cmp: Comparison) -> str:
    o = cmp.options
    n = int(cmp.rows["regression"].sum())
    verdict = f"{n} regression(s)" if n else "no regressions"
    return (
        f"{verdict} (metric {o.metric}, max drop {o.max_drop:g} of the scale, alpha {o.alpha:g}"
        f"{', Holm-adjusted' if o.adjust == 'holm' else ''}; p one-sided for a drop)"
    )


def format_table(cmp: Comparison) -> str:
    """The comparison as a plain-text table with warnings first, for the terminal."""
    lines = [f"compare {cmp.base} -> {cmp.cand}"] + [f"WARNING: {w}" for w in cmp.warnings]
    lines += [f"note: {n}" for n in cmp.notes]
    table = pd.DataFrame(
        [
            {
                "principle": r.principle,
                "judge": r.judge,
                **_cells(r, _shows_gate(cmp.options)),
                "status": r.status.upper() if r.regression else r.status,
            }
            for r in cmp.rows.itertuples()
        ]
    )
    lines += [
        "",
        table.to_string(index=False) if not table.empty else "(nothing to compare)",
        "",
        _headline(cmp),
    ]
    return "\n".join(lines)


def to_markdown(cmp: Comparison) -> str:
    """A Markdown summary for a pull-request comment."""
    level = 1 - cmp.options.alpha
    mark = "❌" if cmp.rows["regression"].any() else "✅"
    out = [
        f"### Behaviour comparison: {md_code(cmp.base)} → {md_code(cmp.cand)}",
        "",
        f"**{mark} {_headline(cmp)}**",
        "",
    ]
    out += [f"> ⚠️ {w}" for w in cmp.warnings] + ([""] if cmp.warnings else [])
    gate = _shows_gate(cmp.options)
    head = [
        "Principle",
        "Judge",
        "n",
        "Base",
        "Cand",
        f"Δ [{level:.0%} CI]",
        "Δ % scale",
        "p",
        "Pass",
        "McNemar p",
        *(["Gate p"] if gate else []),
        "Status",
    ]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in cmp.rows.itertuples():
        status = "❌ regression" if r.regression else r.status
        out.append(
            "| "
            + " | ".join([f"`{r.principle}`", f"`{r.judge}`", *_cells(r, gate).values(), status])
            + " |"
        )
    out += [""] + [f"_{n}_" for n in cmp.notes]
    return "\n".join(out).rstrip() + "\n"


def _failure_text(r: Any, options: CompareOptions) -> str:
    what = (
        f"mean score {r.base_mean:.2f} -> {r.cand_mean:.2f} (delta {r.delta:+.2f} points, "
        f"{100 * r.delta_norm:+.1f}% of the scale, CI [{r.ci_low:+.2f}, {r.ci_high:+.2f}])"
        if options.metric == "score"
        else f"pass rate {100 * r.base_pass:.0f}% -> {100 * r.cand_pass:.0f}% (b={r.b}, c={r.c})"
    )
    gate = f"one-sided p {_p(r.gate_p)} < alpha {options.alpha:g} against a tolerated drop of {options.max_drop:g}"
    return f"{r.principle} / {r.judge}: {what}; {gate}"


def to_junit(cmp: Comparison) -> str:
    """JUnit XML: one testcase per principle × judge, a failure for each regression, warnings in
    system-out.
    """
    n_fail, n_skip = int(cmp.rows["regression"].sum()), int((cmp.rows["status"] == "no data").sum())
    counts = {
        "tests": str(len(cmp.rows)),
        "failures": str(n_fail),
        "errors": "0",
        "skipped": str(n_skip),
    }
    root = ET.Element("testsuites", {"name": "harness compare", **counts, "time": "0"})
    suite = ET.SubElement(
        root, "testsuite", {"name": f"compare {cmp.base} -> {cmp.cand}", **counts, "time": "0"}
    )
    props = ET.SubElement(suite, "properties")
    for key, value in [("base", cmp.base), ("cand", cmp.cand), *asdict(cmp.options).items()]:
        ET.SubElement(props, "property", {"name": str(key), "value": str(value)})
    for w in cmp.warnings:
        ET.SubElement(props, "property", {"name": "warning", "value": w})
    for r in cmp.rows.itertuples():
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": f"harness.compare.{r.judge}", "name": r.principle, "time": "0"},
        )
        if r.regression:
            text = _failure_text(r, cmp.options)
            ET.SubElement(case, "failure", {"message": text, "type": "regression"}).text = text
        elif r.status == "no data":
            ET.SubElement(case, "skipped", {"message": "fewer than two cases scored in both runs"})
    ET.SubElement(suite, "system-out").text = "\n".join(
        [*(f"WARNING: {w}" for w in cmp.warnings), *cmp.notes]
    )
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
