"""YAML and JSONL files -> validated records, with file:line:column errors.

Built-in names (``default``, ``smollm2``, ``rules``) resolve to the project's own
``constitutions/``,
``judges/`` and ``suites/`` folders; anything else is a path, relative to the file that names it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import ConfigError, Issue, ValidationFailed
from harness.paths import project_root
from harness.schema import Candidate, CandidateRow, Case, Constitution, JudgeConfig, Suite

M = TypeVar("M", bound=BaseModel)
Marks = dict[tuple[str, ...], tuple[int, int]]

KIND_FOLDERS = {"constitution": "constitutions", "judge": "judges", "suite": "suites"}


# --------------------------------------------------------------------------- YAML with positions


def _walk(
    node: yaml.Node, path: tuple[str, ...], marks: Marks, issues: list[Issue], file: str
) -> None:
    """Record the line/column of every value in the node tree; flag duplicate keys."""
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                mark = key.start_mark
                issues.append(
                    Issue(file, mark.line + 1, mark.column + 1, f"duplicate key {name!r}")
                )
            seen.add(name)
            marks[(*path, f"{name}#key")] = (key.start_mark.line + 1, key.start_mark.column + 1)
            _walk(value, (*path, name), marks, issues, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, str(i)), marks, issues, file)


def load_yaml(path: Path) -> tuple[Any, Marks]:
    """Parse a YAML file; returns the data and a map from key path to (line, column)."""
    text = _read(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValidationFailed([Issue(str(path), line, col, f"invalid YAML: {problem}")]) from None
    marks: Marks = {}
    issues: list[Issue] = []
    if node is not None:
        _walk(node, (), marks, issues, str(path))
    if issues:
        raise ValidationFailed(issues)
    return data, marks


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


def _position(loc: tuple[str, ...], marks: Marks, extra_key: bool) -> tuple[int | None, int | None]:
    """Line/column of the deepest part of ``loc`` the file has (for an unknown key: the key itself)."""
    if extra_key and (*loc[:-1], f"{loc[-1]}#key") in marks:
        return marks[(*loc[:-1], f"{loc[-1]}#key")]
    for end in range(len(loc), -1, -1):
        if loc[:end] in marks:
            return marks[loc[:end]]
    return None, None


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str, ...]:
    """Pydantic locations name union branches ('str', 'list[Message]'); the file does not."""
    return tuple(
        str(p)
        for p in loc
        if not (isinstance(p, str) and ("[" in p or p in {"str", "int", "float"}))
    )


def _expected(err: Any) -> str:
    where = ".".join(_clean_loc(err["loc"])) or "top level"
    if err["type"] == "extra_forbidden":
        return f"unknown key {where!r} (not allowed here)"
    if err["type"] == "missing":
        return f"missing required key {where!r}"
    return f"{where}: {err['msg']}"


def validate(
    model: type[M], data: Any, file: str, marks: Marks | None = None, line: int | None = None
) -> M:
    """Validate ``data`` as ``model``; errors carry file:line:column and what was expected."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            loc = _clean_loc(err["loc"])
            pos = _position(loc, marks, err["type"] == "extra_forbidden") if marks else (line, None)
            issues.append(Issue(file, pos[0], pos[1], _expected(err)))
        raise ValidationFailed(_dedupe(issues)) from None


def _dedupe(issues: list[Issue]) -> list[Issue]:
    out: list[Issue] = []
    for issue in issues:
        if issue not in out:
            out.append(issue)
    return out


def load_model(model: type[M], path: Path) -> M:
    """Load one YAML file as a record."""
    data, marks = load_yaml(path)
    if not isinstance(data, dict):
        raise ValidationFailed(
            [Issue(str(path), 1, 1, f"expected a mapping for a {model.__name__}")]
        )
    return validate(model, data, str(path), marks)


# --------------------------------------------------------------------------- references


def resolve(ref: str, kind: str, relative_to: Path | None = None) -> Path:
    """A built-in name (``default``) or a path (relative to the file that names it) -> a file path."""
    candidates = []
    if relative_to is not None:
        candidates.append(relative_to.parent / ref)
    candidates.append(Path(ref))
    if "/" not in ref and not ref.endswith((".yaml", ".yml")):
        for base in (Path.cwd(), project_root()):
            candidates.append(base / KIND_FOLDERS[kind] / f"{ref}.yaml")
    for path in candidates:
        if path.is_file():
            return path
    where = f" (named in {relative_to})" if relative_to else ""
    raise ConfigError(f"{kind} {ref!r}{where}: no such file or built-in {kind}")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- suites


def _jsonl_records(model: type[M], path: Path) -> list[tuple[int, M]]:
    """Records of a JSONL file with their line numbers; every bad line is reported."""
    records: list[tuple[int, M]] = []
    issues: list[Issue] = []
    for lineno, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((lineno, validate(model, json.loads(line), str(path), line=lineno)))
        except json.JSONDecodeError as exc:
            issues.append(Issue(str(path), lineno, exc.colno, f"invalid JSON: {exc.msg}"))
        except ValidationFailed as exc:
            issues.extend(exc.issues)
    if issues:
        raise ValidationFailed(issues)
    return records


@dataclass
class LoadedSuite:
    """A suite with its cases resolved (inline, cases file and candidates file merged)."""

    suite: Suite
    path: Path
    cases: list[Case]
    inputs: list[Path] = field(default_factory=list)
    where: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # case id -> file, line


def _case_position(suite_path: Path, marks: Marks, index: int) -> tuple[int | None, int | None]:
    return marks.get(("cases", str(index)), (None, None))


def load_suite(path: Path | str) -> LoadedSuite:
    """Load a suite, merge its files, and check that every reference holds."""
    path = resolve(str(path), "suite")
    data, marks = load_yaml(path)
    if not isinstance(data, dict):
        raise ValidationFailed([Issue(str(path), 1, 1, "expected a mapping for a Suite")])
    suite = validate(Suite, data, str(path), marks)
    located: list[tuple[str, int | None, Case]] = [
        (str(path), _case_position(path, marks, i)[0], c) for i, c in enumerate(suite.cases)
    ]
    inputs = [path]
    if suite.cases_file:
        cases_path = _sibling(path, suite.cases_file, marks, "cases_file")
        inputs.append(cases_path)
        located += [(str(cases_path), n, c) for n, c in _jsonl_records(Case, cases_path)]
    cases = _unique_cases(located)
    if suite.candidates_file:
        cand_path = _sibling(path, suite.candidates_file, marks, "candidates_file")
        inputs.append(cand_path)
        _attach_candidates(cases, cand_path)
    _check_cases(cases, located)
    where = {c.id: (f, n) for f, n, c in located}
    return LoadedSuite(suite, path, [c for c in cases.values()], inputs, where)


def _sibling(suite_path: Path, name: str, marks: Marks, key: str) -> Path:
    target = suite_path.parent / name
    if not target.is_file():
        line, col = marks.get((key,), (None, None))
        raise ValidationFailed(
            [Issue(str(suite_path), line, col, f"{key}: file {name!r} not found next to the suite")]
        )
    return target


def _unique_cases(located: list[tuple[str, int | None, Case]]) -> dict[str, Case]:
    cases: dict[str, Case] = {}
    issues = []
    for file, line, case in located:
        if case.id in cases:
            issues.append(Issue(file, line, None, f"duplicate case id {case.id!r}"))
        cases[case.id] = case
    if issues:
        raise ValidationFailed(issues)
    return cases


def _attach_candidates(cases: dict[str, Case], path: Path) -> None:
    issues = []
    for lineno, row in _jsonl_records(CandidateRow, path):
        if row.case_id not in cases:
            issues.append(
                Issue(
                    str(path), lineno, None, f"case_id {row.case_id!r} is not a case of the suite"
                )
            )
            continue
        cases[row.case_id].candidates.append(Candidate(**row.model_dump(exclude={"case_id"})))
    if issues:
        raise ValidationFailed(issues)


def _check_cases(cases: dict[str, Case], located: list[tuple[str, int | None, Case]]) -> None:
    where = {c.id: (f, n) for f, n, c in located}
    issues = []
    for case in cases.values():
        file, line = where[case.id]
        gens = [c.generator for c in case.candidates]
        if not gens:
            issues.append(Issue(file, line, None, f"case {case.id!r} has no candidate responses"))
        if len(set(gens)) != len(gens):
            issues.append(
                Issue(file, line, None, f"case {case.id!r} has two candidates from one generator")
            )
        pref = case.human_preference
        for name in (pref.chosen, pref.rejected) if pref else ():
            if name not in gens:
                msg = f"case {case.id!r}: human_preference names unknown generator {name!r}"
                issues.append(Issue(file, line, None, msg))
    if issues:
        raise ValidationFailed(issues)


def check_rated_principles(loaded: LoadedSuite, constitution: Constitution) -> None:
    """Every principle a candidate's ``human_scores`` names must be one of the constitution's."""
    known = {p.id for p in constitution.principles}
    issues = [
        Issue(
            *loaded.where.get(case.id, (str(loaded.path), None)),
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


def load_constitution(
    ref: str | Path, relative_to: Path | None = None
) -> tuple[Constitution, Path]:
    """Load a constitution by built-in name or path."""
    path = resolve(str(ref), "constitution", relative_to)
    return load_model(Constitution, path), path


def load_judge(ref: str | Path, relative_to: Path | None = None) -> tuple[JudgeConfig, Path]:
    """Load a judge config by built-in name or path, checking its backend options too."""
    from harness.backends.base import backend_class, parse_options

    path = resolve(str(ref), "judge", relative_to)
    config = load_model(JudgeConfig, path)
    parse_options(backend_class(config.backend), config.options, str(path))
    return config, path


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
    """Validate one file of any kind, references included; returns the kind."""
    data, _ = load_yaml(path)
    kind = detect_kind(path, data)
    if kind == "constitution":
        load_constitution(path)
    elif kind == "judge":
        load_judge(path)
    else:
        loaded = load_suite(path)
        if loaded.suite.constitution:
            constitution, _ = load_constitution(loaded.suite.constitution, path)
            check_rated_principles(loaded, constitution)
        for ref in loaded.suite.judges:
            load_judge(ref, path)
    return kind
