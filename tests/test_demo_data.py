"""The committed constitution and suites validate, have the intended shape, and rebuild byte for
byte."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from harness.records import Case, Constitution, Suite

ROOT = Path(__file__).resolve().parent.parent
SUITES = ROOT / "suites"
BUILDER = ROOT / "scripts" / "build_demo_suite.py"
SOURCE = ROOT.parent / "shared" / "data"
SUITE_IDS = ["demo", "hh_pairs", "llmbar_mtbench"]
SUITE_SCHEMA_LINE = "# yaml-language-server: $schema=../harness/schemas/suite.schema.json"
BUILT_FILES = [f"{s}{ext}" for s in SUITE_IDS for ext in (".yaml", ".cases.jsonl")]


def load_constitution() -> Constitution:
    """The default constitution, validated."""
    return Constitution.model_validate(
        yaml.safe_load((ROOT / "constitutions" / "default.yaml").read_text())
    )


def load_suite(suite_id: str) -> Suite:
    """A committed suite YAML, validated."""
    return Suite.model_validate(
        yaml.safe_load((SUITES / f"{suite_id}.yaml").read_text(encoding="utf-8"))
    )


def load_cases(suite_id: str) -> list[Case]:
    """The cases of a committed suite, each line validated."""
    suite = load_suite(suite_id)
    assert suite.cases_file is not None
    lines = (SUITES / suite.cases_file).read_text(encoding="utf-8").splitlines()
    return [Case.model_validate_json(line) for line in lines]


def user_turns(case: Case) -> int:
    """How many user turns the case's prompt holds."""
    return sum(m.role == "user" for m in case.messages())


def test_default_constitution_validates() -> None:
    text = (ROOT / "constitutions" / "default.yaml").read_text()
    assert text.startswith(
        "# yaml-language-server: $schema=../harness/schemas/constitution.schema.json\n"
    )
    constitution = load_constitution()
    assert constitution.id == "default"
    assert [p.id for p in constitution.principles] == [
        "honesty",
        "harmlessness",
        "helpfulness",
        "coherence",
    ]
    for p in constitution.principles:
        assert sorted(p.rubric) == [1, 2, 3, 4, 5]
        assert p.examples, f"{p.id} has no example"


@pytest.mark.parametrize("suite_id", SUITE_IDS)
def test_suite_yaml_validates(suite_id: str) -> None:
    text = (SUITES / f"{suite_id}.yaml").read_text(encoding="utf-8")
    assert text.splitlines()[0] == SUITE_SCHEMA_LINE
    suite = load_suite(suite_id)
    assert suite.id == suite_id
    assert suite.constitution == "default"
    assert suite.sources, "every suite names its sources and licences"
    assert suite.cases_file == f"{suite_id}.cases.jsonl"


@pytest.mark.parametrize("suite_id", SUITE_IDS)
def test_cases_are_well_formed_pairs(suite_id: str) -> None:
    principles = {p.id for p in load_constitution().principles}
    generators = set(load_suite(suite_id).generators)
    cases = load_cases(suite_id)
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    for case in cases:
        pref = case.human_preference
        assert pref is not None, case.id
        by_name = {c.generator: c.response for c in case.candidates}
        assert len(case.candidates) == 2 and set(by_name) == {pref.chosen, pref.rejected}, case.id
        assert set(by_name) <= generators, case.id
        assert by_name[pref.chosen].strip() and by_name[pref.rejected].strip(), case.id
        assert by_name[pref.chosen] != by_name[pref.rejected], case.id
        assert pref.principle in principles, case.id
        assert pref.source, case.id


def test_demo_composition() -> None:
    cases = load_cases("demo")
    tags = Counter(t for c in cases for t in c.tags)
    assert len(cases) == 56
    assert tags["hh-harmless"] == 20 and tags["hh-helpful"] == 20 and tags["truthfulqa"] == 16
    assert tags["multi-turn"] >= 8
    single = Counter(c.tags[0] for c in cases if "multi-turn" not in c.tags)
    assert single == {"hh-harmless": 16, "hh-helpful": 16, "truthfulqa": 16}
    multi = Counter(c.tags[0] for c in cases if "multi-turn" in c.tags)
    assert multi["hh-harmless"] > 0 and multi["hh-helpful"] > 0
    for case in cases:
        assert ("multi-turn" in case.tags) == (user_turns(case) >= 2), case.id
    assert all(c.reference is None for c in cases), "no label leaks into a reference answer"


def test_demo_cases_are_short() -> None:
    for case in load_cases("demo"):
        chars = sum(len(m.content) for m in case.messages()) + sum(
            len(c.response) for c in case.candidates
        )
        assert chars <= 1500, case.id


def test_demo_principles_follow_source() -> None:
    expected = {"hh-harmless": "harmlessness", "hh-helpful": "helpfulness", "truthfulqa": "honesty"}
    for case in load_cases("demo"):
        assert case.human_preference is not None
        assert case.human_preference.principle == expected[case.tags[0]], case.id


def test_meta_suites_composition() -> None:
    pairs = load_cases("hh_pairs")
    assert Counter(c.tags[0] for c in pairs) == {"hh-harmless": 150, "hh-helpful": 150}
    assert not {c.id for c in pairs} & {c.id for c in load_cases("demo")}, (
        "meta pairs must differ from the demo"
    )
    bar = load_cases("llmbar_mtbench")
    assert Counter(c.tags[0] for c in bar) == {"llmbar-natural": 100, "mt-bench": 200}


def test_builder_reproduces_committed_files(tmp_path: Path) -> None:
    if not SOURCE.is_dir():
        pytest.skip(
            f"source data folder {SOURCE} is absent (the shared human-labelled data is not in this checkout)"
        )
    cmd = [sys.executable, str(BUILDER), "--source", str(SOURCE), "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    for name in BUILT_FILES:
        assert (tmp_path / name).read_bytes() == (SUITES / name).read_bytes(), (
            f"{name} differs from a fresh build"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(BUILT_FILES), (
        "builder leaves no temp files"
    )


def test_builder_reports_missing_source(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        str(BUILDER),
        "--source",
        str(tmp_path / "nope"),
        "--out",
        str(tmp_path / "out"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "source data folder not found" in result.stderr
    assert not (tmp_path / "out").exists()
