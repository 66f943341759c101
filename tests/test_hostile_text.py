"""Hostile text: lone surrogates, escape codes, bidi overrides and huge responses (issue 12, items 6
and 7). Each is refused at load with its place, or shown escaped and bounded; never a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.backends.base import BackendRequest, Subject
from harness.backends.rules import RulesBackend
from harness.config import load_judge
from harness.errors import ValidationFailed
from harness.file_check import validate_file
from harness.records import Message
from harness.safetext import for_page, for_terminal, md_code
from tests.helpers import TINY_SUITE

ROOT = Path(__file__).resolve().parent.parent
ESC_TITLE = "\x1b]0;pwned\x07"  # an xterm 'set window title' sequence
CLEAR = "\x1b[2J"
RLO = "\u202e"  # right-to-left override


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_CACHE_DIR": str(cwd / ".hcache")}
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="surrogateescape",
        cwd=cwd,
        timeout=300,
        env=env,
    )


def hostile_suite(folder: Path, response: str = "A fine answer.") -> Path:
    """A suite whose generator name, case id and texts carry escape codes and bidi overrides."""
    rows = [
        {
            "id": f"case{CLEAR}1",
            "prompt": f"Say hi{RLO}olleh",
            "candidates": [
                {"generator": f"gen{ESC_TITLE}", "response": response},
                {"generator": "plain", "response": f"bad{RLO}txet {CLEAR}"},
            ],
        }
    ]
    (folder / "cases.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8"
    )
    path = folder / "hostile.yaml"
    path.write_text("id: hostile\ncases_file: cases.jsonl\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- lone surrogates


def test_lone_surrogate_in_jsonl_is_refused_with_its_place(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    good = '{"id": "a", "prompt": "x", "candidates": [{"generator": "g", "response": "ok"}]}'
    bad = '{"id": "b", "prompt": "x", "candidates": [{"generator": "g", "response": "\\ud800"}]}'
    path.write_text(good + "\n" + bad + "\n", encoding="utf-8")
    with pytest.raises(ValidationFailed) as info:
        validate_file(path)
    [issue] = info.value.issues
    assert (issue.file, issue.line, issue.column) == (str(path), 2, 74)
    assert "candidates.0.response" in issue.message and "surrogate" in issue.message


def test_lone_surrogate_in_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(
        TINY_SUITE.replace('"How do I boil an egg?"', '"egg \\udc00"'), encoding="utf-8"
    )
    with pytest.raises(ValidationFailed) as info:
        validate_file(path)
    assert any(i.line == 6 for i in info.value.issues), info.value.issues


def test_run_with_a_surrogate_exits_2_without_traceback(tmp_path: Path) -> None:
    hostile_suite(tmp_path, response="half a pair: \\udfff")
    text = (tmp_path / "cases.jsonl").read_text(encoding="utf-8").replace("\\\\udfff", "\\udfff")
    (tmp_path / "cases.jsonl").write_text(text, encoding="utf-8")
    done = cli("run", "hostile.yaml", "-j", "rules", "--out", "out", "-q", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "UnicodeEncodeError" not in done.stderr
    assert "cases.jsonl:1:" in done.stderr and "surrogate" in done.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- terminal


def test_for_terminal_escapes_control_and_bidi() -> None:
    shown = for_terminal(f"a{ESC_TITLE}b{RLO}c\td\ne\ud800")
    assert shown == "a\\x1b]0;pwned\\x07b\\u202ec\td\ne\\ud800"


def test_cli_output_carries_no_escape_codes(tmp_path: Path) -> None:
    hostile_suite(tmp_path)
    done = cli("run", "hostile.yaml", "-j", "rules", "--out", "out", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for stream in (done.stdout, done.stderr):
        assert "\x1b" not in stream and RLO not in stream and "\x07" not in stream
    assert "gen\\x1b]0;pwned\\x07" in done.stdout  # shown, escaped, not dropped
    bad = tmp_path / "hostile.yaml"
    bad.write_text(f'id: hostile\ncases_file: cases.jsonl\nnope{RLO}: "\\e[2J"\n', "utf-8")
    done = cli("validate", "hostile.yaml", cwd=tmp_path)
    assert done.returncode == 2 and "\x1b" not in done.stderr and RLO not in done.stderr
    assert "nope\\u202e" in done.stderr


# --------------------------------------------------------------------------- report


def test_report_neutralises_control_and_bidi_and_bounds_huge_text(tmp_path: Path) -> None:
    huge = "x" * 1_000_000  # one unbroken megabyte
    hostile_suite(tmp_path, response=huge)
    done = cli("run", "hostile.yaml", "-j", "rules", "--out", "out", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [run] = (tmp_path / "out").iterdir()
    html = (run / "report.html").read_text(encoding="utf-8")
    assert len(html) < 300_000  # the page shows at most 10,000 characters of the response
    assert "990,000 more characters not shown" in html
    assert "\x1b" not in html and RLO not in html and "\x07" not in html
    assert "⟨U+202E⟩" in html and "gen⟨U+001B⟩]0;pwned⟨U+0007⟩" in html
    cases = [json.loads(line) for line in (run / "cases.jsonl").read_text("utf-8").splitlines()]
    assert cases[0]["candidates"][0]["response"] == huge  # the run folder keeps it all


def test_for_page_and_md_code() -> None:
    assert for_page(f"a{RLO}b\r\n") == "a⟨U+202E⟩b\r\n"
    assert md_code("run`x") == "``run`x``"
    assert md_code("`a\nb|") == "`` `a\\x0ab| ``"


# --------------------------------------------------------------------------- rules backend


def test_rules_backend_is_linear_and_off_the_event_loop() -> None:
    """A 1 MB response of distinct sentences (quadratic before: minutes) is judged while the event
    loop keeps serving other work."""
    judge, _ = load_judge("rules")
    backend = RulesBackend(RulesBackend.Options.model_validate(judge.options), judge="rules")
    response = "".join(f"This is sentence number {i}. " for i in range(40_000))
    principles = sorted({r.principle for r in backend.options.rules})
    subjects = [
        Subject(principle=p, response=response, prompt=[Message(role="user", content="hi")])
        for p in principles
    ]
    requests = [BackendRequest(messages=[], subject=s) for s in subjects]

    async def main() -> tuple[int, int]:
        ticks = 0
        task = asyncio.create_task(backend.complete(requests))
        while not task.done():
            ticks += 1
            await asyncio.sleep(0)
        return ticks, len(await task)

    ticks, answered = asyncio.run(main())
    assert answered == len(requests)
    assert ticks > 1  # the loop ran other work while the rules were checked


def test_markdown_comparison_escapes_run_ids() -> None:
    """Run ids from old or hand-edited manifests cannot break out of their code span."""
    import pandas as pd

    from harness.analysis.compare import Comparison, to_markdown

    rows = pd.DataFrame({"regression": pd.Series([], dtype=bool)})
    md = to_markdown(Comparison("base`\n# Approved <img src=x>", "cand", rows))
    head = md.splitlines()[0]
    assert head == "### Behaviour comparison: ``base`\\x0a# Approved <img src=x>`` → `cand`"
