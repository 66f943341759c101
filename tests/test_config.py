"""Bad input gets a short error naming the file, line and what was expected; the CLI exits 2, no
traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import load_constitution, load_judge
from harness.errors import ConfigError, ValidationFailed
from harness.file_check import validate_file
from harness.suite_stream import load_suite
from tests.helpers import write_tiny_suite

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=120,
    )


def issues_of(path: Path) -> list[str]:
    with pytest.raises(ValidationFailed) as info:
        validate_file(path)
    return [str(i) for i in info.value.issues]


def test_tiny_suite_loads_with_conversations(tmp_path: Path) -> None:
    loaded = load_suite(write_tiny_suite(tmp_path))
    assert [c.id for c in loaded.cases] == ["egg", "chat"]
    assert [m.role for m in loaded.cases[1].messages()] == ["user", "assistant", "user"]
    assert loaded.cases[0].human_preference is not None


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("id: x\nprinciples:\n  - id: a\n    statement: [unclosed\n", encoding="utf-8")
    [msg] = issues_of(bad)
    assert msg.startswith(f"{bad}:") and "invalid YAML" in msg
    assert ":5:" in msg or ":4:" in msg


def test_unknown_key_points_at_the_key(tmp_path: Path) -> None:
    path = write_tiny_suite(tmp_path)
    path.write_text(
        path.read_text().replace("    tags: [cooking]", "    tagz: [cooking]"), encoding="utf-8"
    )
    [msg] = issues_of(path)
    assert msg == f"{path}:7:5: unknown key 'cases.0.tagz' (not allowed here)"


def test_wrong_type_and_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "j.yaml"
    path.write_text("id: j\nbackend: rules\nmax_concurrency: lots\n", encoding="utf-8")
    msgs = issues_of(path)
    assert any(m.startswith(f"{path}:3:18: max_concurrency:") and "integer" in m for m in msgs)
    path.write_text("backend: rules\n", encoding="utf-8")
    assert issues_of(path) == [f"{path}:1:1: missing required key 'id'"]


def test_bad_backend_options_are_named(tmp_path: Path) -> None:
    path = tmp_path / "j.yaml"
    path.write_text("id: j\nbackend: rules\noptions:\n  rules: []\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"j.yaml:4:10: backend 'rules': options.rules"):
        load_judge(path)


def test_missing_references(tmp_path: Path) -> None:
    path = write_tiny_suite(tmp_path)
    path.write_text(path.read_text() + "cases_file: nowhere.jsonl\n", encoding="utf-8")
    [msg] = issues_of(path)
    assert "cases_file: file 'nowhere.jsonl' not found" in msg and msg.startswith(f"{path}:")
    with pytest.raises(ConfigError, match="no such file or built-in constitution"):
        load_constitution("no-such-constitution")


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("id: s\ncases_file: cases.jsonl\n", encoding="utf-8")
    good = '{"id": "a", "prompt": "hi", "candidates": [{"generator": "g", "response": "r"}]}'
    (tmp_path / "cases.jsonl").write_text(
        f'{good}\n{{"id": "b", "prompt": 3}}\nnot json\n', encoding="utf-8"
    )
    msgs = issues_of(tmp_path / "s.yaml")
    assert any(m.startswith(f"{tmp_path / 'cases.jsonl'}:2:") for m in msgs)
    assert any(m.startswith(f"{tmp_path / 'cases.jsonl'}:3:1: invalid JSON") for m in msgs)


def test_reference_checks(tmp_path: Path) -> None:
    path = write_tiny_suite(tmp_path)
    path.write_text(
        path.read_text().replace("{chosen: good, rejected: bad}", "{chosen: good, rejected: ugly}")
    )
    [msg] = issues_of(path)
    assert "human_preference names unknown generator 'ugly'" in msg


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "j.yaml"
    path.write_text("id: a\nid: b\nbackend: rules\n", encoding="utf-8")
    assert issues_of(path) == [f"{path}:2:1: duplicate key 'id'"]


def test_cli_validate_exit_codes_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nprinciples: 3\n", encoding="utf-8")
    proc = cli("validate", str(bad), "constitutions/default.yaml", "judges/rules.yaml")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and f"{bad}:2:13:" in proc.stderr
    assert "constitutions/default.yaml: ok (constitution)" in proc.stdout


def test_cli_run_on_missing_suite_is_clean(tmp_path: Path) -> None:
    proc = cli("run", str(tmp_path / "absent.yaml"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "absent.yaml" in proc.stderr
    assert not (tmp_path / "out").exists()
