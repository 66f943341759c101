"""A suite validated in one streamed pass, whose cases then stream from a temporary copy.

:func:`open_suite` reports every problem of a suite and its case files at once, with file and line
(:func:`load_suite` is built on it, so the messages are the same), yet holds only a
few small facts per case: its id, line, label and where its copy is. Each validated case, with the
candidates file's rows for it joined on, is written as one JSON line to an anonymous temporary file;
:meth:`SuiteStream.cases` reads them back in suite order, or in any order of positions
(:meth:`SuiteStream.select`: a seeded sample, a shuffle), one at a time.

The candidates file is not held either: its rows are validated as they are read and remembered as
byte offsets grouped by case id, and each case reads its rows back from the file when it is copied.
"""

from __future__ import annotations

import json
import os
import tempfile
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from harness.config import Located, jsonl_records, resolve, sibling, validate
from harness.errors import Issue, ValidationFailed
from harness.records import Candidate, CandidateRow, Case, Suite
from harness.yamlfile import Marks, load_yaml


@dataclass
class SuiteStream:
    """A validated suite: small facts per case in memory, the cases themselves in a temporary file.

    Use it as a context manager (or call :meth:`close`) to let the temporary file go.
    """

    suite: Suite
    path: Path
    inputs: list[Path]  # the suite's files: the suite, its cases file, its candidates file
    cases_path: Path | None  # where the cases after the suite's inline ones are defined
    n_inline: int  # cases defined in the suite file itself (they come first)
    ids: dict[str, int]  # case id -> position in suite order
    lines: array[int]  # each case's line in its file (0: not known)
    offsets: array[int]  # where each case's line starts in the copy, then where the last ends
    label_codes: array[int]  # each case's label principle, an index into label_names (-1: none)
    label_names: list[str]
    copy: IO[bytes]  # one validated case a line, in suite order
    order: list[int] | None = None  # the positions that stream, in this order (None: all)

    def __enter__(self) -> SuiteStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Let the temporary copy go."""
        self.copy.close()

    @property
    def total(self) -> int:
        """Cases in the suite."""
        return len(self.lines)

    def __len__(self) -> int:
        """Cases that stream (all, or those selected)."""
        return self.total if self.order is None else len(self.order)

    def select(self, positions: list[int]) -> None:
        """Stream only these suite positions, in this order, from now on."""
        self.order = positions

    def locate(self, case_id: str) -> tuple[str, int | None]:
        """The file and line that define a case."""
        pos = self.ids[case_id]
        file = self.path if pos < self.n_inline or self.cases_path is None else self.cases_path
        return str(file), self.lines[pos] or None

    def labels(self) -> Iterator[tuple[str, str]]:
        """(case id, principle) of each case whose human label names a principle."""
        for case_id, pos in self.ids.items():
            code = self.label_codes[pos]
            if code >= 0:
                yield case_id, self.label_names[code]

    def raw(self) -> Iterator[bytes]:
        """Each streamed case's JSON line, one at a time."""
        fd = self.copy.fileno()
        for pos in range(self.total) if self.order is None else self.order:
            start = self.offsets[pos]
            yield os.pread(fd, self.offsets[pos + 1] - start, start)

    def cases(self) -> Iterator[Case]:
        """The streamed cases, one at a time, never all at once."""
        for line in self.raw():
            yield Case.model_validate_json(line)

    def chunks(self, size: int) -> Iterator[list[Case]]:
        """The streamed cases, ``size`` at a time."""
        for chunk in self.line_chunks(size):
            yield [case for _, case in chunk]

    def line_chunks(self, size: int) -> Iterator[list[tuple[bytes, Case]]]:
        """The streamed cases with their JSON lines (no newline), ``size`` at a time: a copy of
        the cases can write the lines instead of serialising the cases again.
        """
        chunk: list[tuple[bytes, Case]] = []
        for line in self.raw():
            chunk.append((line[:-1], Case.model_validate_json(line)))
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def open_suite(path: Path | str) -> SuiteStream:
    """Validate a suite and its files in one pass, copying each valid case to a temporary file.

    Every problem in the suite and its case files is reported at once, as one ValidationFailed.
    """
    path = resolve(str(path), "suite")
    data, marks = load_yaml(path)
    if not isinstance(data, dict):
        raise ValidationFailed([Issue(str(path), 1, 1, "expected a mapping for a Suite")])
    suite = validate(Suite, data, str(path), marks)
    cases_path = sibling(path, suite.cases_file, marks, "cases_file") if suite.cases_file else None
    cand_path = None
    if suite.candidates_file:
        cand_path = sibling(path, suite.candidates_file, marks, "candidates_file")
    # The copy outlives this call: the SuiteStream returned closes it.
    copy = tempfile.TemporaryFile(prefix="harness-suite-")  # noqa: SIM115
    try:
        return _read(suite, path, marks, cases_path, cand_path, copy)
    except BaseException:
        copy.close()
        raise


def _read(
    suite: Suite,
    path: Path,
    marks: Marks,
    cases_path: Path | None,
    cand_path: Path | None,
    copy: IO[bytes],
) -> SuiteStream:
    """The pass: the candidates file's rows first (they join the cases), then every case."""
    cand_issues: list[Issue] = []
    line_issues: list[Issue] = []
    rows = CandidateRows(cand_path, cand_issues) if cand_path else None
    pass_ = _Pass(copy, rows)
    try:
        for i, case in enumerate(suite.cases):
            pass_.add(case, str(path), marks.get(("cases", str(i)), (None, None))[0])
        if cases_path is not None:
            for lineno, _, case in jsonl_records(Case, cases_path, line_issues):
                pass_.add(case, str(cases_path), lineno)
        if rows is not None:  # the issues of a file come in its order: bad lines, then strays
            cand_issues += rows.unknown(pass_.ids)
    finally:
        if rows is not None:
            rows.close()
    issues = line_issues + pass_.duplicates + cand_issues + pass_.problems()
    if issues:
        raise ValidationFailed(issues)
    copy.flush()
    return SuiteStream(
        suite, path, [p for p in (path, cases_path, cand_path) if p], cases_path,
        len(suite.cases), pass_.ids, pass_.lines, pass_.offsets, pass_.codes,
        list(pass_.names), copy,
    )  # fmt: skip


class CandidateRows:
    """A candidates file's good rows, as byte offsets grouped by case id: the texts stay on disk."""

    def __init__(self, path: Path, issues: list[Issue]):
        self.path = path
        self.rows: dict[str, list[int]] = {}
        for _, offset, row in jsonl_records(CandidateRow, path, issues):
            self.rows.setdefault(row.case_id, []).append(offset)
        self._fh = path.open("rb")

    def close(self) -> None:
        """Close the file."""
        self._fh.close()

    def attach(self, case: Case) -> None:
        """Append the case's rows to its candidates, in file order."""
        for offset in self.rows.get(case.id, ()):
            self._fh.seek(offset)
            row = CandidateRow.model_validate(json.loads(self._fh.readline()))
            case.candidates.append(Candidate(**row.model_dump(exclude={"case_id"})))

    def unknown(self, ids: dict[str, int]) -> list[Issue]:
        """An issue for each row whose case id is not a case of the suite, with its line."""
        stray = {o: cid for cid, offs in self.rows.items() if cid not in ids for o in offs}
        if not stray:
            return []
        return [
            Issue(str(self.path), n, None, f"case_id {stray[o]!r} is not a case of the suite")
            for n, o, _ in jsonl_records(CandidateRow, self.path, [])
            if o in stray
        ]


class _Pass:
    """The validation pass over a suite's cases: their small facts and problems; their copy."""

    def __init__(self, copy: IO[bytes], rows: CandidateRows | None):
        self.copy, self.rows = copy, rows
        self.ids: dict[str, int] = {}
        self.lines = array("q")
        self.offsets = array("q", [0])
        self.codes = array("i")
        self.names: dict[str, int] = {}
        self.duplicates: list[Issue] = []
        # case id -> its problems; a redefined id keeps only its last definition's, as the
        # in-memory loader kept only the last definition of an id.
        self.found: dict[str, list[Issue]] = {}

    def add(self, case: Case, file: str, line: int | None) -> None:
        """Take one valid case: check it, note its facts, copy its line."""
        again = case.id in self.ids
        if again:
            self.duplicates.append(Issue(file, line, None, f"duplicate case id {case.id!r}"))
        else:
            self.ids[case.id] = len(self.lines)
        if self.rows is not None:
            self.rows.attach(case)
        problems = case_problems(case, file, line)
        if problems or again:
            self.found[case.id] = problems
        self.lines.append(line or 0)
        self.codes.append(self._code(case))
        data = case.model_dump_json().encode("utf-8") + b"\n"
        self.copy.write(data)
        self.offsets.append(self.offsets[-1] + len(data))

    def _code(self, case: Case) -> int:
        pref = case.human_preference
        if pref is None or pref.principle is None:
            return -1
        return self.names.setdefault(pref.principle, len(self.names))

    def problems(self) -> list[Issue]:
        """Every case's problems, in the order of the cases' first definitions."""
        found = sorted(self.found.items(), key=lambda kv: self.ids[kv[0]])
        return [issue for _, issues in found for issue in issues]


def case_problems(case: Case, file: str, line: int | None) -> list[Issue]:
    """What is wrong with a case once its candidates are joined: none, one generator twice, or a
    human preference naming a generator it does not have.
    """
    issues: list[Issue] = []
    gens = [c.generator for c in case.candidates]
    if not gens:
        issues.append(Issue(file, line, None, f"case {case.id!r} has no candidate responses"))
    if len(set(gens)) != len(gens):
        msg = f"case {case.id!r} has two candidates from one generator"
        issues.append(Issue(file, line, None, msg))
    pref = case.human_preference
    for name in (pref.chosen, pref.rejected) if pref else ():
        if name not in gens:
            msg = f"case {case.id!r}: human_preference names unknown generator {name!r}"
            issues.append(Issue(file, line, None, msg))
    return issues


@dataclass
class LoadedSuite:
    """A suite with its cases resolved (inline, cases file and candidates file merged)."""

    suite: Suite
    path: Path
    cases: list[Case]
    inputs: list[Path] = field(default_factory=list)
    where: Located = field(default_factory=dict)

    def locate(self, case_id: str) -> tuple[str, int | None]:
        """The file and line that define a case."""
        return self.where.get(case_id, (str(self.path), None))

    def labels(self) -> Iterator[tuple[str, str]]:
        """(case id, principle) of each case whose human label names a principle."""
        for case in self.cases:
            pref = case.human_preference
            if pref and pref.principle is not None:
                yield case.id, pref.principle


def load_suite(path: Path | str) -> LoadedSuite:
    """Load a suite, merge its files, and check that every reference holds.

    Every problem in the suite and its case files is reported at once. The cases are held in
    memory; ``harness run`` streams them instead (:func:`open_suite`).
    """
    with open_suite(path) as stream:
        cases = list(stream.cases())
        where = {c.id: stream.locate(c.id) for c in cases}
        return LoadedSuite(stream.suite, stream.path, cases, stream.inputs, where)
