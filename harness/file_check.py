"""Validate one input file of any kind (constitution, judge, suite, cases or candidates JSONL).

``harness validate`` runs this: each file is loaded the way a run would load it, references
included, and every problem is reported at once with its file and line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.config import (
    _jsonl_records,
    _unique_cases,
    check_labels,
    load_constitution,
    load_jsonl,
    load_judge,
)
from harness.errors import Issue, ValidationFailed
from harness.records import CandidateRow, Case, Constitution
from harness.suite_stream import LoadedSuite, load_suite
from harness.yamlfile import load_yaml, read_text


def check_rated_principles(loaded: LoadedSuite, constitution: Constitution) -> None:
    """Every principle a candidate's ``human_scores`` names must be one of the constitution's."""
    known = {p.id for p in constitution.principles}
    issues = [
        Issue(
            *loaded.locate(case.id),
            None,
            f"case {case.id!r}, candidate {cand.generator!r}: human_scores names principle "
            f"{pid!r}, "
            f"which constitution {constitution.id!r} does not have (expected one of "
            f"{', '.join(sorted(known))})",
        )
        for case in loaded.cases
        for cand in case.candidates
        for pid in cand.human_scores
        if pid not in known
    ]
    if issues:
        raise ValidationFailed(issues)


def detect_kind(path: Path, data: Any) -> str:
    """Guess which kind of file this is, from its keys."""
    if isinstance(data, dict):
        if "principles" in data:
            return "constitution"
        if "backend" in data:
            return "judge"
        if "cases" in data or "cases_file" in data or "candidates_file" in data:
            return "suite"
    raise ValidationFailed(
        [
            Issue(
                str(path),
                1,
                1,
                "cannot tell the kind: expected a constitution (principles), "
                "a judge (backend) or a suite (cases / cases_file)",
            )
        ]
    )


def validate_file(path: Path) -> str:
    """Validate one file of any kind, references included; returns the kind.

    A ``.jsonl`` file is a suite's cases file (or, when its rows have ``case_id``, its candidates).
    """
    if path.suffix == ".jsonl":
        return _validate_jsonl(path)
    data, _ = load_yaml(path)
    kind = detect_kind(path, data)
    if kind == "constitution":
        load_constitution(path)
    elif kind == "judge":
        load_judge(path)
    else:
        loaded = load_suite(path)
        constitution, c_path = load_constitution(loaded.suite.constitution or "default", path)
        check_labels(loaded, constitution, c_path)
        check_rated_principles(loaded, constitution)
        for ref in loaded.suite.judges:
            load_judge(ref, path)
    return kind


def _validate_jsonl(path: Path) -> str:
    first = next((line for line in read_text(path).splitlines() if line.strip()), "")
    try:
        candidates = isinstance(row := json.loads(first), dict) and "case_id" in row
    except (json.JSONDecodeError, RecursionError):
        candidates = False
    if candidates:
        load_jsonl(CandidateRow, path)
        return "candidates file (JSONL)"
    issues: list[Issue] = []
    located: list[tuple[str, int | None, Case]] = [
        (str(path), n, c) for n, c in _jsonl_records(Case, path, issues)
    ]
    _unique_cases(located, issues)
    if issues:
        raise ValidationFailed(issues)
    return "cases file (JSONL)"
