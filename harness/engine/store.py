"""The run store: one folder per run, written so that a crash loses nothing and a rerun resumes.

A run folder holds::

    manifest.json        what was judged, with what (inputs with hashes, versions, seed; never secrets)
    constitution.json    the constitution as judged (a snapshot, so the run stands alone)
    cases.jsonl          the suite's cases with their candidates, as judged
    verdicts.jsonl       append-only, one Verdict per line, written as verdicts arrive
    verdicts.parquet     the same verdicts as a table, written when the run completes
    pairwise.jsonl       append-only ordered pairwise judgments (PairVerdict), when pairwise judging ran
    pairwise.parquet     the same as a table
    generations.jsonl    generated texts (samples, critiques, revisions), when generation ran
    report.html          the self-contained report

Every stage after judging reads this folder, never in-process state.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd

from harness.errors import RunError
from harness.schema import Case, Constitution, Generation, PairVerdict, RunManifest, Verdict

MANIFEST = "manifest.json"
CONSTITUTION = "constitution.json"
CASES = "cases.jsonl"
VERDICTS = "verdicts.jsonl"
VERDICTS_PARQUET = "verdicts.parquet"
PAIRS = "pairwise.jsonl"
PAIRS_PARQUET = "pairwise.parquet"
GENERATIONS = "generations.jsonl"
REPORT = "report.html"

Record = Verdict | PairVerdict | Generation
FILES: dict[type[Record], str] = {Verdict: VERDICTS, PairVerdict: PAIRS, Generation: GENERATIONS}


def write_atomic(path: Path, text: str) -> None:
    """Write a file so readers see the old or the new content, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_jsonl_tolerant(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Rows of a JSONL file, ignoring a torn last line; returns (rows, byte length of the good part)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    rows: list[dict[str, Any]] = []
    good = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # the last write was cut off mid-line: drop it, it will be redone
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good += len(line)
    return rows, good


class RunStore:
    """Writes one run folder; safe to reopen after a crash."""

    def __init__(self, root: Path):
        self.root = root
        self._files: dict[str, IO[str]] = {}

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def exists(self) -> bool:
        """True when the folder holds a manifest (a started run)."""
        return self.manifest_path.exists()

    def initialise(
        self, manifest: RunManifest, constitution: Constitution, cases: list[Case]
    ) -> None:
        """Create the folder and its fixed inputs (only for a new run)."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(
            self.root / CONSTITUTION, constitution.model_dump_json(indent=2, by_alias=True)
        )
        write_atomic(self.root / CASES, "".join(c.model_dump_json() + "\n" for c in cases))
        self.write_manifest(manifest)

    def write_manifest(self, manifest: RunManifest) -> None:
        write_atomic(self.manifest_path, manifest.model_dump_json(indent=2))

    def done_items(self) -> dict[str, Record]:
        """Records already written (pointwise and pairwise), by item id; repairs a torn last line."""
        done: dict[str, Record] = {}
        for model, name in FILES.items():
            for row in self._repaired_rows(self.root / name):
                done[row["item_id"]] = model.model_validate(
                    row
                )  # a redone error is superseded by its retry
        return done

    @staticmethod
    def _repaired_rows(path: Path) -> list[dict[str, Any]]:
        """Rows of a JSONL file after cutting a torn last line off, so appends stay clean."""
        rows, good = read_jsonl_tolerant(path)
        if path.exists() and path.stat().st_size != good:
            with path.open("r+b") as fh:
                fh.truncate(good)
        return rows

    def append(self, records: Iterable[Record]) -> None:
        """Append records as whole lines (verdicts and pairwise judgments to their own files), flushed at once."""
        lines: dict[str, list[str]] = {}
        for rec in records:
            lines.setdefault(FILES[type(rec)], []).append(rec.model_dump_json())
        for name, chunk in lines.items():
            fh = self._files.get(name) or self._files.setdefault(
                name, (self.root / name).open("a", encoding="utf-8")
            )
            fh.write("\n".join(chunk) + "\n")
            fh.flush()

    def close(self) -> None:
        for fh in self._files.values():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        self._files.clear()

    def write_parquet(self) -> pd.DataFrame:
        """Write verdicts.parquet (and pairwise.parquet) from the JSONL logs; returns all verdicts."""
        done = list(self.done_items().values())
        frame = verdict_frame([v for v in done if isinstance(v, Verdict)])
        _write_parquet(frame, self.root / VERDICTS_PARQUET)
        pairs = [v for v in done if isinstance(v, PairVerdict)]
        if pairs:
            _write_parquet(pair_frame(pairs), self.root / PAIRS_PARQUET)
        return frame


VERDICT_COLUMNS = list(Verdict.model_fields)
PAIR_COLUMNS = list(PairVerdict.model_fields)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def pair_frame(pairs: list[PairVerdict]) -> pd.DataFrame:
    """Ordered pairwise judgments as a tidy table."""
    frame = pd.DataFrame([p.model_dump() for p in pairs], columns=PAIR_COLUMNS)
    return frame.sort_values(
        ["case_id", "principle", "judge", "first", "second"], kind="stable"
    ).reset_index(drop=True)


def verdict_frame(verdicts: list[Verdict]) -> pd.DataFrame:
    """Verdicts as a tidy table with a fixed column order."""
    frame = pd.DataFrame([v.model_dump() for v in verdicts], columns=VERDICT_COLUMNS)
    return frame.sort_values(
        ["case_id", "generator", "principle", "judge"], kind="stable"
    ).reset_index(drop=True)


@dataclass
class RunData:
    """Everything a finished (or interrupted) run folder holds, read back for analysis and reports."""

    root: Path
    manifest: RunManifest
    constitution: Constitution
    cases: list[Case]
    verdicts: pd.DataFrame
    pairs: pd.DataFrame


def read_run(root: Path | str) -> RunData:
    """Read a run folder; raises RunError naming what is missing or unreadable."""
    root = Path(root)
    if not (root / MANIFEST).exists():
        raise RunError(f"{root}: not a run folder (no {MANIFEST})")
    try:
        manifest = RunManifest.model_validate_json((root / MANIFEST).read_text(encoding="utf-8"))
        constitution = Constitution.model_validate_json(
            (root / CONSTITUTION).read_text(encoding="utf-8")
        )
        cases = [Case.model_validate(r) for r in read_jsonl_tolerant(root / CASES)[0]]
    except (OSError, ValueError) as exc:
        raise RunError(f"{root}: unreadable run folder: {exc}") from None
    latest = {
        r["item_id"]: Verdict.model_validate(r) for r in read_jsonl_tolerant(root / VERDICTS)[0]
    }
    pairs = {
        r["item_id"]: PairVerdict.model_validate(r) for r in read_jsonl_tolerant(root / PAIRS)[0]
    }
    return RunData(
        root,
        manifest,
        constitution,
        cases,
        verdict_frame(list(latest.values())),
        pair_frame(list(pairs.values())),
    )
