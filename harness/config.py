"""YAML and JSONL files -> validated records, with file:line:column errors.

Built-in names (``default``, ``smollm2``, ``rules``) resolve to the project's own ``constitutions/``,
``judges/`` and ``suites/`` folders; anything else is a path, relative to the file that names it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from harness.errors import ConfigError, Issue, ValidationFailed
from harness.paths import project_root
from harness.records import Case, Constitution, JudgeConfig
from harness.safetext import SURROGATE
from harness.yamlfile import Marks, load_yaml, parse_yaml

M = TypeVar("M", bound=BaseModel)

KIND_FOLDERS = {"constitution": "constitutions", "judge": "judges", "suite": "suites"}


def _position(loc: tuple[str, ...], marks: Marks, extra_key: bool) -> tuple[int | None, int | None]:
    """Line/column of the deepest part of ``loc`` the file has (for an unknown key: the key itself)."""
    if extra_key and (*loc[:-1], f"{loc[-1]}#key") in marks:
        return marks[(*loc[:-1], f"{loc[-1]}#key")]
    for end in range(len(loc), -1, -1):
        if loc[:end] in marks:
            return marks[loc[:end]]
    return None, None


def _is_branch(part: Any) -> bool:
    """Whether a pydantic location part names a union branch ('str', 'list[Message]')."""
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float"})


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str, ...]:
    """Pydantic locations name union branches ('str', 'list[Message]'); the file does not."""
    return tuple(str(p) for p in loc if not _is_branch(p))


def _relevant(errors: list[Any]) -> list[Any]:
    """Drop a union branch's bare type mismatch when another branch got further into the value.

    For ``prompt: [{role: bot, ...}]`` pydantic reports both ``prompt: Input should be a valid
    string`` (the ``str`` branch) and ``prompt.0.role: ...`` (the list branch); only the second
    helps.
    """
    deeper: set[tuple[Any, ...]] = set()
    for err in errors:
        loc = tuple(err["loc"])
        for i, part in enumerate(loc):
            if _is_branch(part) and len(loc) > i + 1:
                deeper.add(loc[:i])
    return [
        e
        for e in errors
        if not (e["loc"] and _is_branch(e["loc"][-1]) and tuple(e["loc"][:-1]) in deeper)
    ]


def _expected(err: Any) -> str:
    where = ".".join(_clean_loc(err["loc"])) or "top level"
    if err["type"] == "extra_forbidden":
        return f"unknown key {where!r} (not allowed here)"
    if err["type"] == "missing":
        return f"missing required key {where!r}"
    return f"{where}: {err['msg']}"


def _surrogates(data: Any) -> list[tuple[str, ...]]:
    """Key paths of the strings (keys included) that hold a lone UTF-16 surrogate."""
    found: list[tuple[str, ...]] = []
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack and len(found) < 20:
        value, path = stack.pop()
        if isinstance(value, str):
            if SURROGATE.search(value):
                found.append(path)
        elif isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, str) and SURROGATE.search(k):
                    found.append((*path, f"{k}#key"))
                stack.append((v, (*path, str(k))))
        elif isinstance(value, list):
            stack.extend((v, (*path, str(i))) for i, v in enumerate(value))
    return found[::-1]


def _surrogate_issues(data: Any, file: str, marks: Marks | None, line: int | None) -> list[Issue]:
    issues = []
    for path in _surrogates(data):
        pos = _position(path, marks, False) if marks else (line, None)
        where = ".".join(path).replace("#key", "") or "top level"
        issues.append(
            Issue(
                file,
                *pos,
                f"{where}: holds a lone UTF-16 surrogate (an escape such as \\ud800 without its "
                "pair), which is not valid Unicode text; remove it or give the full pair",
            )
        )
    return issues


def validate(
    model: type[M],
    data: Any,
    file: str,
    marks: Marks | None = None,
    line: int | None = None,
    escaped: bool = True,
) -> M:
    r"""Validate ``data`` as ``model``; errors carry file:line:column and what was expected.

    Every problem is reported at once; text that is not valid Unicode (a lone surrogate) is refused.
    ``escaped`` False says the source text held no ``\u`` escape, the only way JSON read from
    strictly decoded UTF-8 can carry a surrogate: the walk over every string is then skipped.
    """
    issues = _surrogate_issues(data, file, marks, line) if escaped else []
    try:
        record = model.model_validate(data)
    except ValidationError as exc:
        for err in _relevant(exc.errors()):
            loc = _clean_loc(err["loc"])
            pos = _position(loc, marks, err["type"] == "extra_forbidden") if marks else (line, None)
            issues.append(Issue(file, pos[0], pos[1], _expected(err)))
    if issues:
        raise ValidationFailed(_dedupe(issues))
    return record


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
    """Hex SHA-256 of a file's bytes (read in blocks: a suite's cases file can be large)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# --------------------------------------------------------------------------- suites


def _line_marks(text: str, lineno: int) -> Marks | None:
    """Positions inside one JSON line (JSON is YAML flow syntax), shifted to the line's number."""
    same_length = re.sub(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}", r"\\ufffd", text)  # libyaml refuses
    try:
        _, marks = parse_yaml(same_length, "")
    except ConfigError:
        return None
    return {k: (lineno, col) for k, (_, col) in marks.items()}


def _jsonl_line(model: type[M], path: Path, lineno: int, line: str) -> M:
    """One JSONL line as a record; errors carry the line and the column of the bad value."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            [Issue(str(path), lineno, exc.colno, f"invalid JSON: {exc.msg}")]
        ) from None
    except RecursionError:
        raise ValidationFailed(
            [Issue(str(path), lineno, None, "invalid JSON: nested too deeply")]
        ) from None
    try:
        return validate(model, data, str(path), line=lineno, escaped="\\u" in line)
    except ValidationFailed:
        marks = _line_marks(line, lineno)
        if marks is None:
            raise
        return validate(model, data, str(path), marks)


def jsonl_lines(path: Path) -> Iterator[tuple[int, int, str]]:
    """(line number, byte offset, text) of each non-blank line of a JSONL file, read as a stream.

    Lines end at a newline only: a U+2028 inside a JSON string is text, not a line break.
    """
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    with fh:
        offset = 0
        for lineno, raw in enumerate(fh, start=1):
            start, offset = offset, offset + len(raw)
            try:
                text = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{path}:{lineno}: cannot read: {exc}") from None
            if text.strip():
                yield lineno, start, text


def jsonl_records(model: type[M], path: Path, issues: list[Issue]) -> Iterator[tuple[int, int, M]]:
    """(line number, byte offset, record) of each good line; every bad line goes to ``issues``."""
    for lineno, offset, line in jsonl_lines(path):
        try:
            yield lineno, offset, _jsonl_line(model, path, lineno, line)
        except ValidationFailed as exc:
            issues.extend(exc.issues)


def _jsonl_records(model: type[M], path: Path, issues: list[Issue]) -> list[tuple[int, M]]:
    """Records of a JSONL file with their line numbers; every bad line is added to ``issues``."""
    return [(n, r) for n, _, r in jsonl_records(model, path, issues)]


def load_jsonl(model: type[M], path: Path) -> list[tuple[int, M]]:
    """Every record of a JSONL file, or one error listing every bad line."""
    issues: list[Issue] = []
    records = _jsonl_records(model, path, issues)
    if issues:
        raise ValidationFailed(issues)
    return records


Located = dict[str, tuple[str, int | None]]  # case id -> (file, line) where it is defined


def sibling(suite_path: Path, name: str, marks: Marks, key: str) -> Path:
    """The file a suite names by ``key`` (next to the suite), or an error at the key's place."""
    target = suite_path.parent / name
    if not target.is_file():
        line, col = marks.get((key,), (None, None))
        raise ValidationFailed(
            [Issue(str(suite_path), line, col, f"{key}: file {name!r} not found next to the suite")]
        )
    return target


def _unique_cases(
    located: list[tuple[str, int | None, Case]], issues: list[Issue]
) -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for file, line, case in located:
        if case.id in cases:
            issues.append(Issue(file, line, None, f"duplicate case id {case.id!r}"))
        cases[case.id] = case
    return cases


class SuiteFacts(Protocol):
    """What the label checks ask of a suite, held in memory or streamed."""

    def locate(self, case_id: str) -> tuple[str, int | None]:
        """The file and line that define a case."""
        ...

    def labels(self) -> Iterable[tuple[str, str]]:
        """(case id, principle) of each case whose human label names a principle."""
        ...


def check_labels(loaded: SuiteFacts, constitution: Constitution, c_path: Path) -> None:
    """Every ``human_preference.principle`` must name a principle of the constitution.

    Raises ValidationFailed listing each case whose label names another principle.
    """
    ids = [p.id for p in constitution.principles]
    issues = [
        Issue(
            *loaded.locate(case_id),
            None,
            f"case {case_id!r}: human_preference.principle {principle!r} is not a "
            f"principle of constitution {constitution.id!r} ({c_path}); it has {ids}",
        )
        for case_id, principle in loaded.labels()
        if principle not in ids
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
    """Load a judge config by built-in name or path, checking its backend and options too."""
    from harness.backends.base import backend_class

    path = resolve(str(ref), "judge", relative_to)
    data, marks = load_yaml(path)
    if not isinstance(data, dict):
        raise ValidationFailed([Issue(str(path), 1, 1, "expected a mapping for a JudgeConfig")])
    config = validate(JudgeConfig, data, str(path), marks)
    try:
        cls = backend_class(config.backend)
    except ConfigError as exc:
        line, col = marks.get(("backend",), (None, None))
        raise ValidationFailed([Issue(str(path), line, col, f"backend: {exc}")]) from None
    _check_options(cls, config.options, path, marks)
    return config, path


def _check_options(cls: Any, options: dict[str, Any], path: Path, marks: Marks) -> None:
    """The backend's own Options model, with errors placed under ``options`` in the file."""
    inner = {k[1:]: v for k, v in marks.items() if k[:1] == ("options",)}
    try:
        validate(
            cls.Options, options, str(path), inner or None, marks.get(("options",), (None,))[0]
        )
    except ValidationFailed as exc:
        raise ValidationFailed(
            [
                Issue(i.file, i.line, i.column, f"backend {cls.name!r}: options.{i.message}")
                for i in exc.issues
            ]
        ) from None
