"""harness compare: power and false-alarm rate by simulation, warnings, outputs and the CLI's exit
codes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis.compare import (
    CompareOptions,
    align_generators,
    compare_runs,
    compare_units,
    holm,
    paired_units,
    to_junit,
    to_markdown,
)
from harness.analysis.stats import sign_flip_pvalues
from harness.cli import main
from harness.errors import HarnessError
from harness.records import (
    Candidate,
    Case,
    Constitution,
    InputRecord,
    Principle,
    RunManifest,
    Verdict,
)
from harness.rundir import VERDICT_COLUMNS, RunWriter, read_run

ALPHA = 0.05
N_CASES = 60
SHIFT = 0.4  # a regression of 0.4 points on a 1..5 rubric (10 % of the scale)
FAST = CompareOptions(n_boot=200, n_perm=1000)


def compare_frames(
    base: pd.DataFrame,
    cand: pd.DataFrame,
    constitution: Constitution,
    options: CompareOptions | None = None,
    cand_constitution: Constitution | None = None,
) -> pd.DataFrame:
    """Per principle × judge comparison of two verdict tables: compare_runs without run folders."""
    options = options or CompareOptions()
    b, c, _ = align_generators(base, cand)
    units = paired_units(b, c, constitution, cand_constitution or constitution)
    return compare_units(units, options, [p.id for p in constitution.principles])


def likert_pair(
    rng: np.random.Generator, shape: tuple[int, ...], shift: float
) -> tuple[np.ndarray, np.ndarray]:
    """Base and candidate 1..5 scores of the same cases: a shared case difficulty plus judge
    noise."""
    quality = rng.normal(0, 0.9, shape)
    base = np.clip(np.round(3.4 + quality + rng.normal(0, 0.6, shape)), 1, 5)
    cand = np.clip(np.round(3.4 - shift + quality + rng.normal(0, 0.6, shape)), 1, 5)
    return base, cand


def constitution(n: int) -> Constitution:
    return Constitution(
        id="sim",
        principles=[
            Principle(
                id=f"p{i}",
                statement="s",
                rubric={k: str(k) for k in range(1, 6)},
                critique_request="c",
                revision_request="r",
                pass_threshold=3,
            )
            for i in range(n)
        ],
    )


def verdicts(scores: np.ndarray, generator: str = "model") -> pd.DataFrame:
    """A verdict table (the run store's columns) from a [judges ×] principles × cases array of
    scores."""
    scores = scores if scores.ndim == 3 else scores[None]
    j, p, c = np.indices(scores.shape)
    flat = scores.ravel()
    return pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(flat.size)],
            "case_id": [f"c{k}" for k in c.ravel()],
            "generator": generator,
            "principle": [f"p{k}" for k in p.ravel()],
            "judge": [f"j{k}" for k in j.ravel()],
            "status": "scored",
            "score": flat,
            "normalized": (flat - 1) / 4,
            "distribution": None,
            "passed": flat >= 3,
            "rationale": "",
            "raw_output": "",
            "reason": "",
            "tokens_in": 0,
            "tokens_out": 0,
            "latency_s": 0.0,
            "cached": False,
            "attempts": 1,
            "truncated": False,
        },
        columns=VERDICT_COLUMNS,
    )


# --------------------------------------------------------------------------- simulation


def test_gate_test_false_alarm_rate_and_power_vectorised() -> None:
    """The one-sided paired sign-flip test the gate uses, over thousands of simulated run pairs."""
    rng = np.random.default_rng(1)
    base, cand = likert_pair(rng, (4000, N_CASES), 0.0)
    null_p = sign_flip_pvalues(cand - base, alternative="less", n_perm=2000)
    base, cand = likert_pair(rng, (2000, N_CASES), SHIFT)
    power = (sign_flip_pvalues(cand - base, alternative="less", n_perm=2000) < ALPHA).mean()
    assert abs((null_p < ALPHA).mean() - ALPHA) < 0.015  # ~4 standard errors of a 4000-run estimate
    assert power > 0.9
    # Holm across 10 principles keeps the chance of any false alarm in a null run at most alpha.
    family = np.array([holm(row) for row in null_p.reshape(400, 10)])
    assert (family < ALPHA).any(axis=1).mean() <= ALPHA + 0.02


def test_compare_flags_regressions_with_high_power_and_few_false_alarms() -> None:
    """End to end through compare_frames: each simulated run pair has 4 judges x 10 principles."""
    rng = np.random.default_rng(2)
    cons = constitution(10)

    def alarms(shift: float, runs: int, **options: object) -> np.ndarray:
        opts = CompareOptions(n_boot=100, n_perm=1000, **options)  # type: ignore[arg-type]
        out = []
        for _ in range(runs):
            base, cand = likert_pair(rng, (4, 10, N_CASES), shift)
            out.append(
                compare_frames(verdicts(base), verdicts(cand), cons, opts)["regression"].to_numpy()
            )
        return np.array(out)

    assert 0.025 <= alarms(0.0, 10).mean() <= 0.08  # 400 null tests at alpha 0.05
    assert alarms(SHIFT, 5).mean() > 0.9  # 200 tests of a 0.4-point drop
    assert not alarms(SHIFT, 2, max_drop=0.15).any()  # a 10 % drop is within a 15 % tolerance
    assert alarms(SHIFT, 2, metric="pass_rate").mean() > 0.4  # pass/fail carries less information


def test_holm_adjustment() -> None:
    out = holm(np.array([0.01, 0.04, np.nan, 0.03]))
    assert (
        out[0] == pytest.approx(0.03)
        and out[3] == pytest.approx(0.06)
        and out[1] == pytest.approx(0.06)
    )
    assert np.isnan(out[2])


def test_generators_pair_by_name_or_one_to_one() -> None:
    cons = constitution(1)
    base, cand = likert_pair(np.random.default_rng(3), (1, N_CASES), 2 * SHIFT)
    renamed = compare_frames(
        verdicts(base, generator="v1"), verdicts(cand, generator="v2"), cons, FAST
    )
    assert renamed["regression"].iloc[0] and renamed["n_cases"].iloc[0] == N_CASES
    two = pd.concat([verdicts(base, generator="a"), verdicts(base, generator="b")])
    with pytest.raises(HarnessError, match="share no generator"):
        compare_frames(two, verdicts(cand, generator="c"), cons, FAST)


# --------------------------------------------------------------------------- run folders


def write_run(
    root: Path,
    scores: np.ndarray,
    *,
    judge_sha: str = "a" * 64,
    constitution_sha: str = "b" * 64,
    cases: int = N_CASES,
    prompt: str = "Question {i}?",
) -> Path:
    cons = constitution(scores.shape[0])
    case_list = [
        Case(
            id=f"c{i}",
            prompt=prompt.format(i=i),
            candidates=[Candidate(generator="model", response="r")],
        )
        for i in range(cases)
    ]
    manifest = RunManifest(
        run_id=root.name,
        created="2025-01-01T00:00:00Z",
        suite=InputRecord(path="suite.yaml", sha256="0" * 64),
        constitution=InputRecord(path="c.yaml", sha256=constitution_sha),
        judges=[InputRecord(path="j.yaml", sha256=judge_sha)],
        judge_configs=[{"id": "j0", "backend": "rules"}],
        versions={"harness": "1"},
        seed=0,
        n_items=scores.size,
    )
    store = RunWriter(root).open()
    store.initialise(manifest, cons, case_list)
    rows = verdicts(scores[:, :cases]).to_dict("records")
    store.append([Verdict.model_validate({**r, "distribution": None}) for r in rows])
    store.close()
    return root


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    base, cand = likert_pair(np.random.default_rng(4), (2, N_CASES), 0.0)
    _, worse = likert_pair(np.random.default_rng(4), (2, N_CASES), 0.8)
    worse[1] = base[1]  # p1 unchanged, p0 regressed
    return {
        "base": write_run(tmp_path / "base", base),
        "same": write_run(tmp_path / "same", cand),
        "worse": write_run(tmp_path / "worse", worse),
        "rejudged": write_run(
            tmp_path / "rejudged",
            cand,
            judge_sha="c" * 64,
            constitution_sha="d" * 64,
            cases=N_CASES - 5,
            prompt="Other {i}?",
        ),
    }


def test_compare_runs_flags_the_regressed_principle_only(runs: dict[str, Path]) -> None:
    result = compare_runs(read_run(runs["base"]), read_run(runs["worse"]))
    flagged = dict(zip(result.rows["principle"], result.rows["regression"], strict=True))
    assert flagged == {"p0": True, "p1": False}
    assert result.warnings == []
    row = result.rows.set_index("principle").loc["p0"]
    assert row["ci_high"] < 0 and row["delta"] == pytest.approx(row["cand_mean"] - row["base_mean"])


def test_judge_constitution_and_case_changes_are_warnings_not_regressions(
    runs: dict[str, Path],
) -> None:
    result = compare_runs(read_run(runs["base"]), read_run(runs["rejudged"]))
    text = "\n".join(result.warnings)
    assert "the constitution differs" in text and "judge 'j0' differs" in text
    assert "5 case(s) only in base" in text and "different prompts" in text
    assert not result.rows["regression"].any()


def test_junit_is_read_by_standard_parsers(runs: dict[str, Path]) -> None:
    result = compare_runs(read_run(runs["base"]), read_run(runs["worse"]))
    xml = to_junit(result)
    root = ET.fromstring(xml)
    suite = root.find("testsuite")
    assert root.tag == "testsuites" and suite is not None
    cases = suite.findall("testcase")
    assert (
        [c.get("name") for c in cases] == ["p0", "p1"]
        and suite.get("tests") == "2"
        and suite.get("failures") == "1"
    )
    failure = cases[0].find("failure")
    assert (
        failure is not None
        and "p0 / j0" in (failure.get("message") or "")
        and cases[1].find("failure") is None
    )
    junitparser = pytest.importorskip("junitparser")
    parsed = junitparser.JUnitXml.fromstring(xml)
    suites = list(parsed) if isinstance(parsed, junitparser.JUnitXml) else [parsed]
    assert sum(s.tests for s in suites) == 2 and sum(s.failures for s in suites) == 1
    outcomes = {c.name: [type(r).__name__ for r in c.result] for s in suites for c in s}
    assert outcomes == {"p0": ["Failure"], "p1": []}


def test_markdown_summary(runs: dict[str, Path]) -> None:
    md = to_markdown(compare_runs(read_run(runs["base"]), read_run(runs["rejudged"])))
    assert md.startswith("### Behaviour comparison: `base` → `rejudged`")
    assert "✅ no regressions" in md and "> ⚠️ the constitution differs" in md
    assert "| `p0` | `j0` |" in md


def test_to_dict_is_plain_data(runs: dict[str, Path]) -> None:
    import json

    data = compare_runs(read_run(runs["base"]), read_run(runs["worse"])).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["n_regressions"] == 1 and data["rows"][0]["principle"] == "p0"


# --------------------------------------------------------------------------- CLI


def test_cli_exit_codes_and_files(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junit, md = tmp_path / "out" / "junit.xml", tmp_path / "out" / "summary.md"
    code = main(
        [
            "compare",
            str(runs["base"]),
            str(runs["worse"]),
            "--junit",
            str(junit),
            "--markdown",
            str(md),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1 and "REGRESSION" in out and "1 regression(s)" in out
    assert ET.parse(junit).getroot().find("testsuite") is not None and md.read_text().startswith(
        "###"
    )
    assert main(["compare", str(runs["base"]), str(runs["same"])]) == 0
    assert main(["compare", str(runs["base"]), str(runs["worse"]), "--max-drop", "0.5"]) == 0
    assert main(["compare", str(runs["base"]), str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(runs["base"]), str(runs["worse"]), "--alpha", "1.5"])
    assert exc.value.code == 2
