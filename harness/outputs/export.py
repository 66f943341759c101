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

import contextlib
import dataclasses
import itertools
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from harness.analysis.pairwise import rankings
from harness.errors import ConfigError
from harness.outputs import card
from harness.outputs.chunks import (
    CHUNK_CASES,
    ChunkReader,
    Plan,
    candidate_chunks,
    make_plan,
    pair_chunks,
    revision_chunks,
)
from harness.outputs.pairs import Cells
from harness.outputs.preferences import (
    OVERALL,
    POLICY_STEPS,
    Decision,
    ExportOptions,
    apply_policies,
    new_counts,
)
from harness.outputs.sink import Progress, TableSink
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
    run: RunData,
    cases: list[Case],
    judge: str | None,
    scores: Cells | None,
    combined: pd.DataFrame | None,
) -> list[dict[str, Any]]:
    """Every candidate of these cases with its mean scores, pairwise win rates and rank within its
    case.

    ``scores``: the judge's pointwise cells of these cases, or None when the judge scored nothing
    pointwise; ``combined``: its pairwise judgments of them over orders, or None when it compared
    no pairs. The rank (1 = best, ties share the better rank) comes from ``rankings`` (the
    pairwise overall win rate) when the judge compared pairs, else from the pointwise overall
    score. No export policy applies here.
    """
    overall = _overall_scores(run, scores or {})
    wins, rank = _wins(run, combined) if combined is not None else ({}, _ranks(overall))
    rank_from = "pointwise" if combined is None else "pairwise"
    principles = [p.id for p in run.constitution.principles]
    rows = []
    for case in cases:
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
            if scores is not None:
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
    *,
    chunk_cases: int | None = None,
    quiet: bool = True,
) -> ExportResult:
    """Build the preference pairs of a run folder and write them, the candidates table and the card.

    The run is read and the files are written ``chunk_cases`` cases at a time (default
    CHUNK_CASES), so memory follows the chunk, not the run; progress goes to stderr unless
    ``quiet``.
    """
    options, chosen_formats = options or ExportOptions(), parse_formats(formats)
    _check_options(options)
    if chunk_cases is not None and chunk_cases < 1:
        raise ConfigError(f"chunk size must be at least 1, got {chunk_cases}")
    run = read_run(run_dir)
    plan = make_plan(run, options)
    out = Path(out_dir)
    _check_replaceable(out)
    schemas = _schemas(run, plan)
    writer = _Writer(run, plan, options, chunk_cases or CHUNK_CASES, quiet)
    with _fresh_folder(out) as tmp:
        counts, n_candidates = writer.write(tmp, schemas, chosen_formats)
        summary = _summary(run, plan, options, chosen_formats, counts, n_candidates, schemas)
        (tmp / "export.json").write_text(
            json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        (tmp / "README.md").write_text(card.render_card(run, summary, schemas), encoding="utf-8")
    return ExportResult(out, summary)


def _check_options(options: ExportOptions) -> None:
    if not 0 <= options.tie_band < 0.5:
        raise ConfigError(f"--tie-band must be in [0, 0.5), got {options.tie_band}")
    if not 0 <= options.min_margin <= 1:
        raise ConfigError(f"--min-margin must be in [0, 1], got {options.min_margin}")


def _schemas(run: RunData, plan: Plan) -> dict[str, pa.Schema]:
    """The schema of each table: 'standard', 'conversational' and 'candidates'."""
    cols = [*["prompt", "chosen", "rejected"], *pair_columns(run, plan.with_scores)]
    wins = plan.source == "pairwise"
    return {
        "standard": schema(cols),
        "conversational": schema(cols, conversational=True),
        "candidates": schema(candidate_columns(run, plan.with_scores, wins)),
    }


class _Writer:
    """Streams the pairs, then the candidates, chunk by chunk into their files."""

    def __init__(
        self, run: RunData, plan: Plan, options: ExportOptions, size: int, quiet: bool
    ) -> None:
        self.run, self.plan, self.options, self.size = run, plan, options, size
        self.weights = {p.id: p.weight for p in run.constitution.principles}
        judged = len(plan.pair_cases) if plan.source == "pairwise" else plan.cases
        total = (judged if plan.judge_pairs else 0) + plan.revisions + plan.cases
        self.progress = Progress(total, quiet)

    def write(
        self, folder: Path, schemas: dict[str, pa.Schema], formats: tuple[str, ...]
    ) -> tuple[dict[str, Any], int]:
        """Write every table into ``folder``; the policy counts and the number of candidates."""
        exts: dict[str, list[str]] = {"candidates": ["jsonl", "parquet"]}
        for name in formats:
            stem, ext = name.split(".")
            exts.setdefault(stem, []).append(ext)
        sinks = {stem: TableSink(folder, stem, schemas[stem], e) for stem, e in exts.items()}
        try:
            counts = self._pairs(sinks)
            self._candidates(sinks["candidates"])
        finally:
            for sink in sinks.values():
                sink.close()
        self.progress.finish()
        return counts, sinks["candidates"].rows

    def _pairs(self, sinks: dict[str, TableSink]) -> dict[str, Any]:
        reader, counts = ChunkReader(self.run, self.plan), new_counts()
        chunks = pair_chunks(self.run, self.plan, reader, self.size)
        if self.options.revisions:
            chunks = itertools.chain(chunks, revision_chunks(self.run, reader, self.size))
        for chunk in chunks:
            kept, _ = apply_policies(chunk.pairs, self.options, self.weights, counts)
            scores = chunk.cells if self.plan.with_scores else None
            cases = {c.id: c for c in chunk.cases}
            metas = [pair_meta(d, self.run, self.options, scores) for d in kept]
            for stem, build in (("standard", standard_row), ("conversational", conversational_row)):
                if stem in sinks:
                    sinks[stem].append(
                        [
                            build(d, cases[d.pair.case_id], m)
                            for d, m in zip(kept, metas, strict=True)
                        ]
                    )
            self.progress.add(chunk.items)
        return counts

    def _candidates(self, sink: TableSink) -> None:
        reader = ChunkReader(self.run, self.plan)
        for chunk in candidate_chunks(self.run, self.plan, reader, self.size):
            scores = chunk.cells if self.plan.with_scores else None
            sink.append(
                candidate_rows(self.run, chunk.cases, self.plan.judge, scores, chunk.combined)
            )
            self.progress.add(chunk.items)


def _summary(
    run: RunData,
    plan: Plan,
    options: ExportOptions,
    formats: tuple[str, ...],
    counts: dict[str, Any],
    n_candidates: int,
    schemas: dict[str, pa.Schema],
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
        "judge": plan.judge,
        "source": plan.source,
        "options": dataclasses.asdict(options),
        "policy_steps": POLICY_STEPS,
        "formats": list(formats),
        "counts": counts,
        "candidates": n_candidates,
        "columns": schemas["standard"].names,
    }


@contextlib.contextmanager
def _fresh_folder(out: Path) -> Iterator[Path]:
    """A fresh sibling folder to write into, swapped in for ``out`` in one rename when the block
    ends without error; on error it goes and ``out`` stays as it was.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
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
