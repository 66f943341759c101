"""Hostile and broken configuration: every case is a short error naming the file and place, never
a traceback, a hang or a folder outside --out (issue 12, items 4, 5, 8 and 9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import yamlfile
from harness.config import load_judge
from harness.errors import ValidationFailed
from harness.file_check import validate_file
from harness.suite_stream import load_suite
from tests.helpers import TINY_SUITE, write_tiny_suite

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    if cwd is not None:
        env["HARNESS_CACHE_DIR"] = str(cwd / ".hcache")
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=120,
        env=env,
    )


def issues(path: Path) -> list[str]:
    with pytest.raises(ValidationFailed) as info:
        validate_file(path)
    return [str(i) for i in info.value.issues]


def laughs(levels: int) -> str:
    """A 'billion laughs' document: each level aliases the previous one nine times."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- item 4: YAML


def test_alias_bomb_is_refused_with_its_place(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(laughs(9), encoding="utf-8")  # 9**10 values if expanded
    [msg] = issues(bomb)
    assert msg.startswith(f"{bomb}:") and "aliases expand the document by more than" in msg
    assert "100,000" in msg


def test_aliases_within_the_bound_still_load(tmp_path: Path) -> None:
    data, marks = yamlfile.parse_yaml(laughs(3) + "b: {<<: {x: 1}, y: 2}\n", "f.yaml")
    assert len(data["a3"]) == 9 and len(data["a3"][0][0]) == 9
    assert data["b"] == {"x": 1, "y": 2}
    assert marks[("a1",)] == (2, 5)


def test_line_walk_visits_each_node_once() -> None:
    """Positions are recorded once per node: an alias does not walk its target again."""
    _, marks = yamlfile.parse_yaml(laughs(4), "f.yaml")
    assert len(marks) < 100  # walking every expanded path would record 7,381 positions


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a: &a [1, *a]\n", "alias *a refers to its own anchor"),
        ("a: &a {b: {c: *a}}\n", "alias *a refers to its own anchor"),
        ("[" * 400 + "]" * 400 + "\n", "nested deeper than 100 levels"),
        ("a:\n" + "".join("  " * i + f"- k{i}:\n" for i in range(1, 150)), "nested deeper"),
        ("a: *nowhere\n", "alias *nowhere names no anchor"),
        ("a: 1\n---\nb: 2\n", "expected one document"),
    ],
)
def test_recursive_and_deep_documents_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text, encoding="utf-8")
    [msg] = issues(path)
    assert msg.startswith(f"{path}:") and expected in msg


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:
        f.truncate(yamlfile.MAX_FILE_BYTES + 1)  # sparse: no disk used
    [msg] = issues(path)
    assert "64 MiB per YAML file" in msg


def test_the_c_loader_is_used_where_available() -> None:
    if not getattr(yaml, "__with_libyaml__", False):
        pytest.skip("PyYAML built without libyaml")
    assert yamlfile._Loader is yaml.CSafeLoader


def test_cli_on_hostile_yaml_exits_2_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(laughs(12), encoding="utf-8")
    (tmp_path / "self.yaml").write_text("id: x\ncases: &c [*c]\n", encoding="utf-8")
    done = cli("validate", "bomb.yaml", "self.yaml", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr
    assert "bomb.yaml:" in done.stderr and "self.yaml:2:" in done.stderr


# --------------------------------------------------------------------------- item 5: paths


@pytest.mark.parametrize("bad_id", ["../../x", "/abs/path", "a/b", ".hidden", ""])
def test_suite_ids_are_slugs(tmp_path: Path, bad_id: str) -> None:
    path = write_tiny_suite(tmp_path)
    path.write_text(TINY_SUITE.replace("id: tiny", f"id: {json.dumps(bad_id)}"), encoding="utf-8")
    [msg] = issues(path)
    assert msg.startswith(f"{path}:1:5: id:") and "pattern" in msg


def test_run_id_outside_out_is_refused(tmp_path: Path) -> None:
    write_tiny_suite(tmp_path)
    for bad in ("../escape", "/tmp/escape", "a/../../b"):
        done = cli(
            "run", "tiny.yaml", "-j", "rules", "--out", "out", "--run-id", bad, "-q", cwd=tmp_path
        )
        assert done.returncode == 2 and "run id" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "escape").exists() and not Path("/tmp/escape").exists()


def test_symlinked_run_folder_outside_out_is_refused(tmp_path: Path) -> None:
    write_tiny_suite(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "r1").symlink_to(tmp_path / "elsewhere")
    done = cli(
        "run", "tiny.yaml", "-j", "rules", "--out", "out", "--run-id", "r1", "-q", cwd=tmp_path
    )
    assert done.returncode == 2 and "outside the output folder" in done.stderr, done.stderr
    assert not any((tmp_path / "elsewhere").iterdir())


# --------------------------------------------------------------------------- item 8: references


def test_unknown_backend_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "j.yaml"
    path.write_text("id: j\nbackend: no-such-backend\n", encoding="utf-8")
    with pytest.raises(ValidationFailed) as info:
        load_judge(path)
    [msg] = [str(i) for i in info.value.issues]
    assert msg.startswith(f"{path}:2:10: backend: unknown backend 'no-such-backend'")


def test_label_principle_must_be_in_the_constitution(tmp_path: Path) -> None:
    path = write_tiny_suite(tmp_path)
    path.write_text(
        TINY_SUITE.replace(
            "{chosen: good, rejected: bad}", "{chosen: good, rejected: bad, principle: harmlesness}"
        ),
        encoding="utf-8",
    )
    [msg] = issues(path)
    assert msg.startswith(f"{path}:5:") and "'harmlesness' is not a principle" in msg
    done = cli(
        "run", "tiny.yaml", "-j", "rules", "--out", "out", "-q", "--labelled-only", cwd=tmp_path
    )
    assert done.returncode == 2 and "'harmlesness' is not a principle" in done.stderr
    done = cli("run", "tiny.yaml", "-j", "rules", "--out", "out", "-q", cwd=tmp_path)
    assert done.returncode == 0 and "warning: " in done.stderr and "'harmlesness'" in done.stderr


def test_resume_from_another_directory(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    write_tiny_suite(work)
    first = cli("run", "tiny.yaml", "-j", "rules", "--out", "out", "--run-id", "r", "-q", cwd=work)
    assert first.returncode == 0, first.stderr
    (work / "out" / "r" / "verdicts.jsonl").write_text("", encoding="utf-8")
    again = cli("run", "--resume", str(work / "out" / "r"), "-q", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (work / "out" / "r" / "verdicts.jsonl").read_text(encoding="utf-8").strip()


# --------------------------------------------------------------------------- item 9: rough edges


def _cases_file(folder: Path, rows: list[object]) -> Path:
    path = folder / "cases.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


GOOD_CASE = {"id": "c1", "prompt": "Hi", "candidates": [{"generator": "g", "response": "Hello"}]}


def test_validate_accepts_a_jsonl_cases_file(tmp_path: Path) -> None:
    path = _cases_file(tmp_path, [GOOD_CASE, {**GOOD_CASE, "id": "c2"}])
    assert validate_file(path) == "cases file (JSONL)"
    done = cli("validate", str(path))
    assert done.returncode == 0 and "ok (cases file (JSONL))" in done.stdout, done.stderr


def test_jsonl_case_errors_come_at_once_with_columns(tmp_path: Path) -> None:
    bad_role = {**GOOD_CASE, "id": "c2", "prompt": [{"role": "bot", "content": "x"}]}
    path = _cases_file(tmp_path, [GOOD_CASE, bad_role, "not a case", {**GOOD_CASE}])
    msgs = issues(path)
    assert msgs[0].startswith(f"{path}:2:34: prompt.0.role:"), msgs
    assert not any(m.endswith("prompt: Input should be a valid string") for m in msgs)
    assert any(m.startswith(f"{path}:3:") for m in msgs)
    assert any(m.startswith(f"{path}:4:") and "duplicate case id 'c1'" in m for m in msgs)


def test_suite_stages_report_together(tmp_path: Path) -> None:
    """A bad cases-file line and a case without candidates are both reported in one go."""
    _cases_file(tmp_path, [{"id": "c1", "prompt": 5}, {"id": "c2", "prompt": "x"}])
    suite = tmp_path / "s.yaml"
    suite.write_text("id: s\ncases_file: cases.jsonl\n", encoding="utf-8")
    with pytest.raises(ValidationFailed) as info:
        load_suite(suite)
    msgs = [str(i) for i in info.value.issues]
    assert any(":1:" in m and "prompt" in m for m in msgs), msgs
    assert any("'c2' has no candidate responses" in m for m in msgs), msgs


def test_pairwise_with_a_judge_that_cannot_compare_says_so(tmp_path: Path) -> None:
    write_tiny_suite(tmp_path)
    done = cli("run", "tiny.yaml", "-j", "rules", "--out", "out", "-q", "--pairwise", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "judge rules (rules) cannot compare pairs" in done.stderr
