"""``harness export preferences``: a run's preference pairs in TRL's formats, and more.

Writes the pairs, the candidates table and a dataset card into a folder that is replaced as a whole
(never left half-written).

Files (``--format`` picks among the first four; the rest are always written)::

    standard.jsonl / .parquet         TRL standard format: prompt, chosen, rejected as strings
    conversational.jsonl / .parquet   TRL conversational format: message lists
    candidates.jsonl / .parquet       every candidate with its scores, win rates and rank (the N-way
    data)
    README.md                         dataset card (YAML ``configs`` so
    ``datasets.load_dataset(DIR)`` works)
    export.json                       the same counts, options and provenance, machine-readable

Every column has a fixed Arrow type, so JSONL, Parquet and ``datasets`` agree even on all-null
columns.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.analysis.pairwise import rankings
from harness.errors import ConfigError
from harness.outputs import card
from harness.outputs.preferences import (
    OVERALL,
    POLICY_STEPS,
    Cells,
    Decision,
    ExportOptions,
    apply_policies,
    build_pairs,
    check_principle,
    judge_pairs,
    pointwise_cells,
    select,
)
from harness.records import Case, Message
from harness.rundir import RunData, read_run

FORMATS = ("standard.jsonl", "standard.parquet", "conversational.jsonl", "conversational.parquet")
# export.json names itself, so only an earlier export is ever replaced
MARKER = "harness preference export"

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
FLOAT_PREFIXES = ("label_", "score_", "p_win_")
FLOATS = {"soft_label", "margin", "score_margin", "overall_score"}
INTS = {"n_principles", "n_candidates", "rank"}
Key = tuple[str, ...]


# --------------------------------------------------------------------------- prompt rendering


def prompt_text(case: Case) -> str:
    r"""The prompt as one string: a lone user turn is its content; a conversation is a transcript.

    A transcript has one paragraph per turn, ``Human: ...``, ``Assistant: ...`` or ``System: ...``
    (the HH-RLHF convention), separated by blank lines and ending ``\n\nAssistant: `` so prompt +
    response reads on.
    """
    messages = case.messages()
    if len(messages) == 1 and messages[0].role == "user":
        return messages[0].content
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    turns = [f"{names[m.role]}: {m.content}" for m in messages]
    return "\n\n".join(turns) + "\n\nAssistant: "


def _messages(messages: list[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _num(x: Any) -> float | None:
    """A float, or None for missing values (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


# --------------------------------------------------------------------------- preference rows


def pair_columns(run: RunData, with_scores: bool) -> list[str]:
    """Metadata columns of a preference row, in order (prompt, chosen and rejected come first)."""
    ids = [p.id for p in run.constitution.principles]
    cols = [
        "run_id",
        "case_id",
        "source",
        "judge",
        "reviser",
        "chosen_generator",
        "rejected_generator",
        "decided_by",
        "soft_label",
        "margin",
        "score_margin",
        "position_consistent",
        "n_principles",
    ]
    cols += [f"label_{p}" for p in ids]
    if with_scores:
        cols += [f"score_{side}_{p}" for p in ids for side in ("chosen", "rejected")]
    return [*cols, "rationale", "critique"]


def pair_meta(
    d: Decision, run: RunData, options: ExportOptions, scores: Cells | None
) -> dict[str, Any]:
    """The metadata columns of one kept pair; per-principle labels are P(chosen better)."""
    pair = d.pair
    chosen, rejected = (pair.a, pair.b) if d.a_chosen else (pair.b, pair.a)
    row: dict[str, Any] = {
        "run_id": run.manifest.run_id,
        "case_id": pair.case_id,
        "source": pair.source,
        "judge": pair.judge,
        "reviser": pair.reviser,
        "chosen_generator": chosen,
        "rejected_generator": rejected,
        "decided_by": options.principle,
        "soft_label": d.soft_label,
        "margin": d.margin,
        "score_margin": None,
        "position_consistent": d.consistent,
        "n_principles": len(d.used),
    }
    for p in run.constitution.principles:
        label = pair.labels.get(p.id)
        row[f"label_{p.id}"] = None if label is None else (label if d.a_chosen else 1 - label)
    if scores is not None:
        _add_scores(row, d, run, scores)
    row["rationale"], row["critique"] = pair.rationale, pair.critique
    return row


def _add_scores(row: dict[str, Any], d: Decision, run: RunData, scores: Cells) -> None:
    """Per-principle pointwise scores of both sides, and score_margin over the deciding
    principles.
    """

    def get(gen: str, principle: str, col: str) -> float | None:
        return _num(scores.get((row["case_id"], gen, principle), {}).get(col))

    for p in run.constitution.principles:
        row[f"score_chosen_{p.id}"] = get(row["chosen_generator"], p.id, "score")
        row[f"score_rejected_{p.id}"] = get(row["rejected_generator"], p.id, "score")
    if d.pair.source == "revision":
        return  # the revised text was never scored pointwise
    col = "normalized" if row["decided_by"] == OVERALL else "score"
    found = [
        (get(row["chosen_generator"], u, col), get(row["rejected_generator"], u, col), u)
        for u in d.used
    ]
    both = [(c, r, u) for c, r, u in found if c is not None and r is not None]
    if both:
        w = {p.id: p.weight for p in run.constitution.principles}
        row["score_margin"] = sum(w[u] * (c - r) for c, r, u in both) / sum(w[u] for *_, u in both)


def _sides(d: Decision) -> tuple[str, str]:
    return (d.pair.text_a, d.pair.text_b) if d.a_chosen else (d.pair.text_b, d.pair.text_a)


def standard_row(d: Decision, case: Case, meta: dict[str, Any]) -> dict[str, Any]:
    """TRL standard preference format: prompt, chosen and rejected as strings."""
    chosen, rejected = _sides(d)
    return {"prompt": prompt_text(case), "chosen": chosen, "rejected": rejected, **meta}


def conversational_row(d: Decision, case: Case, meta: dict[str, Any]) -> dict[str, Any]:
    """TRL conversational preference format: message lists, each response as one assistant turn."""
    chosen, rejected = _sides(d)
    return {
        "prompt": _messages(case.messages()),
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        **meta,
    }


# --------------------------------------------------------------------------- candidates


def candidate_columns(run: RunData, with_scores: bool, with_wins: bool) -> list[str]:
    """Columns of the candidates table, in order."""
    ids = [p.id for p in run.constitution.principles]
    cols = ["run_id", "case_id", "generator", "prompt", "response", "judge", "n_candidates"]
    if with_scores:
        cols += [f"score_{p}" for p in ids] + ["overall_score"]
    if with_wins:
        cols += [f"p_win_{p}" for p in ids] + ["p_win_overall"]
    return [*cols, "rank", "rank_from"]


def candidate_rows(
    run: RunData, judge: str | None, scores: Cells, combined: pd.DataFrame | None
) -> list[dict[str, Any]]:
    """Every candidate of every case with its mean scores, pairwise win rates and rank within its
    case.

    The rank (1 = best, ties share the better rank) comes from ``rankings`` (the pairwise overall
    win rate) when the judge compared pairs, else from the pointwise overall score. No export policy
    applies here.
    """
    overall = _overall_scores(run, scores)
    wins, rank = _wins(run, combined) if combined is not None else ({}, _ranks(overall))
    rank_from = "pointwise" if combined is None else "pairwise"
    principles = [p.id for p in run.constitution.principles]
    rows = []
    for case in run.cases:
        for cand in case.candidates:
            key = (case.id, cand.generator)
            row: dict[str, Any] = {
                "run_id": run.manifest.run_id,
                "case_id": case.id,
                "generator": cand.generator,
                "prompt": prompt_text(case),
                "response": cand.response,
                "judge": judge or "",
                "n_candidates": len(case.candidates),
            }
            if scores:
                row |= {
                    f"score_{p}": _num(scores.get((*key, p), {}).get("score")) for p in principles
                }
                row["overall_score"] = overall.get(key)
            if combined is not None:
                row |= {f"p_win_{p}": wins.get((*key, p)) for p in [*principles, OVERALL]}
            row["rank"], row["rank_from"] = rank.get(key), rank_from if key in rank else ""
            rows.append(row)
    return rows


def _wins(run: RunData, combined: pd.DataFrame) -> tuple[dict[Key, float], dict[Key, int]]:
    """Mean win probability by (case, generator, principle or 'overall'), and the overall rank, from
    ``rankings``.
    """
    table = rankings(combined, run.constitution)
    wins: dict[Key, float] = {
        (r.case_id, r.generator, r.principle): float(r.p_win) for r in table.itertuples()
    }
    ranks: dict[Key, int] = {
        (r.case_id, r.generator): int(r.rank) for r in table.itertuples() if r.principle == OVERALL
    }
    return wins, ranks


def _overall_scores(run: RunData, scores: Cells) -> dict[Key, float]:
    """Weighted mean normalized score per (case, generator), over the principles scored."""
    weight = {p.id: p.weight for p in run.constitution.principles}
    sums: dict[Key, list[float]] = {}
    for (case_id, gen, principle), cell in scores.items():
        w, acc = weight.get(principle, 1.0), sums.setdefault((case_id, gen), [0.0, 0.0])
        acc[0], acc[1] = acc[0] + w * float(cell["normalized"]), acc[1] + w
    return {k: total / w for k, (total, w) in sums.items()}


def _ranks(values: dict[tuple[str, ...], float]) -> dict[tuple[str, ...], int]:
    """Rank within each case (1 = highest value, ties share the better rank) by (case,
    generator).
    """
    if not values:
        return {}
    frame = pd.DataFrame(
        [(c, g, v) for (c, g), v in values.items()], columns=["case_id", "generator", "v"]
    )
    frame["rank"] = frame.groupby("case_id")["v"].rank(ascending=False, method="min")
    return {(r.case_id, r.generator): int(r.rank) for r in frame.itertuples()}


# --------------------------------------------------------------------------- writing


def arrow_type(column: str, conversational: bool = False) -> pa.DataType:
    """The fixed type of a column, so an all-null column is still float, bool or int."""
    if conversational and column in ("prompt", "chosen", "rejected"):
        return MESSAGES
    if column in FLOATS or column.startswith(FLOAT_PREFIXES):
        return pa.float64()
    if column in INTS:
        return pa.int64()
    return pa.bool_() if column == "position_consistent" else pa.string()


def schema(columns: list[str], conversational: bool = False) -> pa.Schema:
    """The Arrow schema of a file with these columns."""
    return pa.schema([(c, arrow_type(c, conversational)) for c in columns])


def write_jsonl(rows: list[dict[str, Any]], columns: list[str], path: Path) -> None:
    """One JSON object per line, keys in column order, missing values as null (never NaN)."""
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(
                json.dumps({c: row.get(c) for c in columns}, ensure_ascii=False, allow_nan=False)
                + "\n"
            )


def write_parquet(rows: list[dict[str, Any]], table_schema: pa.Schema, path: Path) -> None:
    """A Parquet file; an empty table gets no row group at all, since ``datasets`` fails on an empty
    one.
    """
    if not rows:
        pq.ParquetWriter(path, table_schema).close()
        return
    pq.write_table(pa.Table.from_pylist(rows, schema=table_schema), path)


# --------------------------------------------------------------------------- the export


@dataclass
class ExportResult:
    """Where the export went and what export.json says (counts, options, provenance)."""

    out_dir: Path
    summary: dict[str, Any]


def parse_formats(values: Iterable[str] | None) -> tuple[str, ...]:
    """File names to write; 'standard', 'conversational', 'jsonl' and 'parquet' stand for two each."""
    if not values:
        return FORMATS
    picked: set[str] = set()
    for value in values:
        for v in value.split(","):
            match = [f for f in FORMATS if v.strip() in (f, *f.split("."))]
            if not match:
                raise ConfigError(
                    f"unknown format {v!r}: use {', '.join(FORMATS)}, standard, conversational, "
                    "jsonl or parquet"
                )
            picked.update(match)
    return tuple(f for f in FORMATS if f in picked)


def export_preferences(
    run_dir: Path | str,
    out_dir: Path | str,
    options: ExportOptions | None = None,
    formats: Iterable[str] | None = None,
) -> ExportResult:
    """Build the preference pairs of a run folder and write them, the candidates table and the card."""
    options, chosen_formats = options or ExportOptions(), parse_formats(formats)
    _check_options(options)
    run = read_run(run_dir)
    check_principle(run, options.principle)
    judge, source = select(run, options)
    combined = (
        judge_pairs(run, judge) if source == "pairwise" else None
    )  # computed once: large runs pay per call
    weights = {p.id: p.weight for p in run.constitution.principles}
    kept, counts = apply_policies(
        build_pairs(run, judge, source, options, combined), options, weights
    )
    scores = pointwise_cells(run, judge)
    tables = _tables(run, kept, options, scores, judge, combined)
    summary = _summary(run, judge, source, options, chosen_formats, counts, tables)
    out = Path(out_dir)
    _write_folder(out, tables, chosen_formats, summary, card.render_card(run, summary, tables))
    return ExportResult(out, summary)


def _check_options(options: ExportOptions) -> None:
    if not 0 <= options.tie_band < 0.5:
        raise ConfigError(f"--tie-band must be in [0, 0.5), got {options.tie_band}")
    if not 0 <= options.min_margin <= 1:
        raise ConfigError(f"--min-margin must be in [0, 1], got {options.min_margin}")


Table = tuple[list[dict[str, Any]], pa.Schema]


def _tables(
    run: RunData,
    kept: list[Decision],
    options: ExportOptions,
    scores: Cells,
    judge: str | None,
    combined: pd.DataFrame | None,
) -> dict[str, Table]:
    """Rows and schema of each table: 'standard', 'conversational' and 'candidates'."""
    cases = {c.id: c for c in run.cases}
    with_scores = bool(scores)
    cols = pair_columns(run, with_scores)
    metas = [pair_meta(d, run, options, scores if with_scores else None) for d in kept]
    standard = [standard_row(d, cases[d.pair.case_id], m) for d, m in zip(kept, metas, strict=True)]
    conversational = [
        conversational_row(d, cases[d.pair.case_id], m) for d, m in zip(kept, metas, strict=True)
    ]
    head = ["prompt", "chosen", "rejected"]
    return {
        "standard": (standard, schema([*head, *cols])),
        "conversational": (conversational, schema([*head, *cols], conversational=True)),
        "candidates": (
            candidate_rows(run, judge, scores, combined),
            schema(candidate_columns(run, with_scores, combined is not None)),
        ),
    }


def _summary(
    run: RunData,
    judge: str | None,
    source: str | None,
    options: ExportOptions,
    formats: tuple[str, ...],
    counts: dict[str, Any],
    tables: dict[str, Table],
) -> dict[str, Any]:
    """export.json: everything the card states, as data."""
    m = run.manifest
    judges = [
        {"id": c.get("id"), "backend": c.get("backend"), "path": r.path, "sha256": r.sha256}
        for c, r in zip(m.judge_configs, m.judges, strict=False)
    ]
    return {
        "kind": MARKER,
        "run_id": m.run_id,
        "run_dir": str(run.root),
        "run_status": m.status,
        "suite": m.suite.model_dump(),
        "constitution": {"id": run.constitution.id, **m.constitution.model_dump()},
        "judges": judges,
        "judge": judge,
        "source": source,
        "options": dataclasses.asdict(options),
        "policy_steps": POLICY_STEPS,
        "formats": list(formats),
        "counts": counts,
        "candidates": len(tables["candidates"][0]),
        "columns": tables["standard"][1].names,
    }


def _write_folder(
    out: Path,
    tables: dict[str, Table],
    formats: tuple[str, ...],
    summary: dict[str, Any],
    readme: str,
) -> None:
    """Write everything into a fresh sibling folder, then swap it in for ``out`` in one rename."""
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        wanted = [*formats, "candidates.jsonl", "candidates.parquet"]
        for name in wanted:
            stem, ext = name.split(".")
            rows, table_schema = tables[stem]
            if ext == "jsonl":
                write_jsonl(rows, table_schema.names, tmp / name)
            else:
                write_parquet(rows, table_schema, tmp / name)
        (tmp / "export.json").write_text(
            json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        (tmp / "README.md").write_text(readme, encoding="utf-8")
        _swap(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_replaceable(out: Path) -> None:
    """Only an empty folder or an earlier export is replaced, never anything else."""
    if out.is_file():
        raise ConfigError(f"--output {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()):
        try:
            kind = json.loads((out / "export.json").read_text(encoding="utf-8")).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind != MARKER:
            raise ConfigError(
                f"--output {out} exists and is not a preference export; choose an empty or new folder"
            )


def _swap(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp``: readers see the old export or the new one, each complete."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def counts_text(summary: dict[str, Any]) -> str:
    """Considered, dropped per policy and kept pairs, as plain text."""
    c = summary["counts"]
    by = ", ".join(f"{n} {s}" for s, n in c["considered_by_source"].items() if n)
    lines = [
        f"judge: {summary['judge'] or '-'} ({summary['source'] or 'revisions only'})",
        f"pairs considered: {c['considered']} ({by})",
    ]
    lines += [f"  dropped {step}: {n}" for step, n in c["dropped"].items() if n]
    lines.append(f"pairs kept: {c['kept']}")
    return "\n".join(lines)
