"""The streamed suite of ``harness run``: every problem at once, cases copied not held, and the
same sample, order and pre-screen as the in-memory suite gave."""

from __future__ import annotations

import gc
import json
import os
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from harness.engine.runner import RunOptions, run
from harness.errors import ValidationFailed
from harness.judging.prescreen import Prescreen, _normal, constant_answers
from harness.records import Candidate, Case
from harness.refusal import is_refusal
from harness.rundir import read_case_index
from harness.suite_stream import load_suite, open_suite

ROOT = Path(__file__).resolve().parent.parent


def _jsonl(path: Path, rows: list[object]) -> None:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), "utf-8"
    )


def _broken_suite(folder: Path) -> Path:
    """A suite with a problem of every stage: JSON, duplicate, candidates file, case checks."""
    suite = folder / "s.yaml"
    suite.write_text(
        "id: s\ncases_file: cases.jsonl\ncandidates_file: cands.jsonl\n"
        "cases:\n  - {id: inline, prompt: hi}\n",
        encoding="utf-8",
    )
    two = [{"generator": "g", "response": "r"}, {"generator": "g", "response": "r2"}]
    _jsonl(
        folder / "cases.jsonl",
        [
            {"id": "a", "prompt": "x"},
            "not json",
            {"id": "b", "prompt": "y", "candidates": two},
            {"id": "a", "prompt": "x again"},
            {"id": "c", "prompt": "z"},
        ],
    )
    _jsonl(
        folder / "cands.jsonl",
        [
            {"case_id": "a", "generator": "g", "response": "ra"},
            {"case_id": "ghost", "generator": "g", "response": "r"},
            {"case_id": "a", "generator": 7, "response": "r"},
            {"case_id": "inline", "generator": "g", "response": "ri"},
        ],
    )
    return suite


def _expected(folder: Path) -> list[str]:
    cases, cands = folder / "cases.jsonl", folder / "cands.jsonl"
    return [
        f"{cases}:2:1: invalid JSON",
        f"{cases}:4: duplicate case id 'a'",
        f"{cands}:3:",  # a bad line of the candidates file, then the rows that match no case
        f"{cands}:2: case_id 'ghost' is not a case of the suite",
        f"{cases}:3: case 'b' has two candidates from one generator",
        f"{cases}:5: case 'c' has no candidate responses",
    ]


def test_every_problem_comes_at_once_in_order_with_file_and_line(tmp_path: Path) -> None:
    suite = _broken_suite(tmp_path)
    for load in (open_suite, load_suite):
        with pytest.raises(ValidationFailed) as info:
            load(suite)
        msgs = [str(i) for i in info.value.issues]
        assert len(msgs) == len(_expected(tmp_path)), msgs
        for msg, start in zip(msgs, _expected(tmp_path), strict=True):
            assert msg.startswith(start), (msg, start)
        assert "generator" in msgs[2]


def test_a_run_of_a_broken_suite_lists_every_problem_without_a_traceback(tmp_path: Path) -> None:
    _broken_suite(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_CACHE_DIR": str(tmp_path / "c")}
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "s.yaml", "-j", "rules", "--out", "out"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for start in _expected(tmp_path):
        assert start.replace(f"{tmp_path}/", "") in done.stderr, (start, done.stderr)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _good_suite(folder: Path, n: int) -> Path:
    """``n`` cases in a cases file; their candidates come from a candidates file."""
    _jsonl(
        folder / "cases.jsonl", [{"id": f"k{i:03d}", "prompt": f"Question {i}?"} for i in range(n)]
    )
    rows = [
        {"case_id": f"k{i:03d}", "generator": g, "response": f"Answer {i} from {g}, in full."}
        for g in ("alpha", "beta")
        for i in reversed(range(n))
    ]
    _jsonl(folder / "cands.jsonl", rows)
    suite = folder / "s.yaml"
    suite.write_text(
        "id: s\njudges: [rules]\ncases_file: cases.jsonl\ncandidates_file: cands.jsonl\n", "utf-8"
    )
    return suite


def _held() -> int:
    """Case and Candidate objects alive now."""
    gc.collect()
    return sum(isinstance(o, Case | Candidate) for o in gc.get_objects())


def test_the_stream_joins_candidates_and_holds_no_case(tmp_path: Path) -> None:
    suite = _good_suite(tmp_path, 40)
    before = _held()  # what earlier tests left alive
    with open_suite(suite) as stream:
        assert _held() == before  # only small facts per case: ids, lines, offsets, labels
        streamed = list(stream.cases())
    assert streamed == load_suite(suite).cases
    assert [c.id for c in streamed] == [f"k{i:03d}" for i in range(40)]
    assert [c.generator for c in streamed[7].candidates] == ["alpha", "beta"]
    assert streamed[7].candidates[1].response == "Answer 7 from beta, in full."


def test_a_raw_line_separator_inside_a_string_is_text(tmp_path: Path) -> None:
    """JSONL lines end at a newline: U+2028 in a response is not a line break."""
    good = {"id": "a", "prompt": "p", "candidates": [{"generator": "g", "response": "x\u2028y"}]}
    text = json.dumps(good, ensure_ascii=False) + "\n" + '{"id": "b", "prompt": 3}\n'
    (tmp_path / "cases.jsonl").write_text(text, encoding="utf-8")
    (tmp_path / "s.yaml").write_text("id: s\ncases_file: cases.jsonl\n", encoding="utf-8")
    with pytest.raises(ValidationFailed) as info:
        open_suite(tmp_path / "s.yaml")
    issues = info.value.issues
    assert issues and all(i.line == 2 and "prompt" in i.message for i in issues), issues


def _old_selection(ids: list[str], seed: int, max_cases: int | None, shuffle: bool) -> list[str]:
    """What --max-cases and --target-ci chose when the suite was a list of cases."""
    rng = random.Random(seed)
    if max_cases is not None and max_cases < len(ids):
        keep = set(rng.sample(range(len(ids)), max_cases))
        ids = [c for i, c in enumerate(ids) if i in keep]
    if shuffle:
        rng.shuffle(ids)
    return ids


@pytest.mark.parametrize(
    ("max_cases", "target_ci"), [(9, None), (9, 0.3), (None, 0.3), (100, None)]
)
def test_max_cases_and_target_ci_choose_as_before(
    tmp_path: Path, max_cases: int | None, target_ci: float | None
) -> None:
    suite = _good_suite(tmp_path, 30)
    ids = [c.id for c in load_suite(suite).cases]
    options = RunOptions(
        suite=suite, judges=["rules"], out=tmp_path / "out", seed=11, use_cache=False, quiet=True,
        max_cases=max_cases, target_ci=target_ci,
    )  # fmt: skip
    result = run(options)
    written = [json.loads(line)["id"] for line in (result.run_dir / "cases.jsonl").open()]
    expected = _old_selection(ids, 11, max_cases, target_ci is not None)
    assert written == expected
    assert list(read_case_index(result.run_dir)["case_id"]) == expected
    again = run(options)  # the same seed finds the same run folder and has nothing left
    assert again.run_dir == result.run_dir and again.session is None


def _reference_constants(cases: list[Case]) -> frozenset[str]:
    """The definition: answers of 40+ characters, not refusals, given to 3+ different prompts."""
    prompts: dict[str, set[str]] = defaultdict(set)
    for case in cases:
        key = _normal(" ".join(m.content for m in case.messages()))
        for cand in case.candidates:
            prompts[_normal(cand.response)].add(key)
    return frozenset(
        t for t, p in prompts.items() if len(p) >= 3 and len(t) >= 40 and not is_refusal(t)
    )


def test_constant_answers_in_one_streamed_pass() -> None:
    rng = random.Random(5)
    pool = [
        "The answer depends on many things, so here is a general overview of it.",
        "I'm sorry, but I can't help with that request, it is against my policy.",
        "Short but constant.",
        "Every prompt gets this same long paragraph of text, whatever it asks about.",
        "An answer that is long enough yet given to two different prompts only!!",
    ]
    cases = []
    for i in range(60):
        prompt = f"prompt {rng.randrange(20)}"  # some prompts repeat: the same prompt counts once
        texts = [f"A unique answer number {i} that is long enough to be counted here."]
        texts.append(pool[rng.randrange(4)] if i >= 2 else pool[4])
        cands = [Candidate(generator=f"g{j}", response=t) for j, t in enumerate(texts)]
        cases.append(Case(id=f"c{i}", prompt=prompt, candidates=cands))
    found = constant_answers(iter(cases))  # a one-shot stream is enough
    assert found == _reference_constants(cases)
    assert _normal(pool[0]) in found and _normal(pool[3]) in found
    assert _normal(pool[4]) not in found  # two prompts only
    assert _normal(pool[1]) not in found and _normal(pool[2]) not in found  # refusal, short
    screen = Prescreen.for_cases(c for c in cases)
    assert "input-independent" in (screen.check(pool[3].upper()) or "")


def test_a_streamed_run_prescreens_the_constant_answer(tmp_path: Path) -> None:
    suite = _good_suite(tmp_path, 6)
    constant = "This reply is the same whatever you ask me, word for word, every time."
    rows = [json.loads(line) for line in (tmp_path / "cands.jsonl").open()]
    for row in rows[:3]:
        row["response"] = constant
    _jsonl(tmp_path / "cands.jsonl", rows)
    result = run(
        RunOptions(suite=suite, judges=["rules"], out=tmp_path / "out", use_cache=False, quiet=True)
    )
    verdicts = [json.loads(line) for line in (result.run_dir / "verdicts.jsonl").open()]
    flagged = {v["case_id"] for v in verdicts if "input-independent" in (v["rationale"] or "")}
    assert flagged == {r["case_id"] for r in rows[:3]}
