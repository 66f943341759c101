"""``harness export preferences`` streams: an export made a few cases at a time is the same export.

The runs here have pairwise and pointwise judgments from one judge (so pairwise rows carry scores),
rationales, revisions (one naming a case the run lacks), a verdict redone later in the log, and
logs spread over several Parquet parts with an unsynced tail, so chunks cut across all of them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from harness.errors import ConfigError
from harness.outputs.export import export_preferences
from harness.outputs.preferences import ExportOptions
from harness.outputs.sink import Progress
from harness.records import PairVerdict, Verdict
from harness.rundir import PAIRS, VERDICTS, CaseRows, RunWriter, read_run
from tests.test_export import (
    make_run,
    pairwise_records,
    pointwise_records,
    verdict,
    write_revisions,
)

FILES = (
    "standard.jsonl",
    "conversational.jsonl",
    "candidates.jsonl",
    "export.json",
    "README.md",
)
PARQUET = ("standard.parquet", "conversational.parquet", "candidates.parquet")


def relabel(records: list[Any], judge: str) -> list[Any]:
    """The same judgments by another judge name (item ids follow)."""
    return [
        r.model_copy(update={"judge": judge, "item_id": r.item_id.replace(r.judge, judge, 1)})
        for r in records
    ]


def spread_run(root: Path) -> Path:
    """A run whose judge 'pj' judged pairwise and pointwise, written in three syncs plus a tail."""
    records: list[Verdict | PairVerdict] = [
        *pairwise_records(),
        *[
            r.model_copy(update={"rationale": f"why {r.item_id}"})
            for r in relabel(pointwise_records(), "pj")
        ],
    ]
    run = make_run(root, records[:9], judges=("pj",))
    store = RunWriter(run).open()
    store.append(records[9:20])
    store.sync()
    store.append(records[20:])
    store.sync()
    # redone later, unsynced: the newest row of an item wins, in every chunking
    store.append([verdict("c3", "z", "helpful", 1, "pj", rationale="redone")])
    store.close()
    write_revisions(
        run,
        [
            {"case_id": "c2", "generator": "y", "revision": "Boil it 8 min.", "confirmed": True},
            {"case_id": "c3", "generator": "z", "revision": "Round.", "p_revised_better": 0.9},
            {"case_id": "gone", "generator": "x", "revision": "?", "p_revised_better": 0.9},
            {"case_id": "tie", "generator": "x", "revision": "Hi there!", "p_revised_better": 0.6},
        ],
    )
    return run


def outputs(out: Path) -> dict[str, Any]:
    """Every file of an export: text files as text, Parquet files as their rows and schema."""
    found: dict[str, Any] = {name: (out / name).read_text(encoding="utf-8") for name in FILES}
    found["export.json"] = json.loads(found["export.json"]) | {"run_dir": None}
    for name in PARQUET:
        table = pq.read_table(out / name)
        found[name] = (table.schema, table.to_pylist())
    return found


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"source": "pointwise", "ties": "keep"},
        {"principle": "honest", "inconsistent": "keep", "unscored": "skip-principle"},
    ],
)
def test_chunked_export_equals_whole_export(tmp_path: Path, options: dict[str, Any]) -> None:
    run = spread_run(tmp_path / "run")
    assert len(list((run / "tables").glob("verdicts-*.parquet"))) >= 2  # chunks cross parts
    whole = outputs(export_one(run, tmp_path / "whole", options, None))
    assert whole["export.json"]["counts"]["kept"] > 0
    assert len(whole["candidates.parquet"][1]) == 9
    for size in (1, 2, 3):
        out = export_one(run, tmp_path / f"by-{size}", options, size)
        assert outputs(out) == whole, f"chunks of {size} cases"
        if size == 2:  # one Parquet row group per chunk that kept rows
            assert pq.ParquetFile(out / "candidates.parquet").num_row_groups == 2


def export_one(run: Path, out: Path, options: dict[str, Any], size: int | None) -> Path:
    export_preferences(run, out, ExportOptions(**options), chunk_cases=size)
    return out


def test_chunked_pairs_keep_the_whole_export_order(tmp_path: Path) -> None:
    """Pairwise pairs are sorted by case id (c2, c3, same, tie), candidates follow suite order."""
    run = spread_run(tmp_path / "run")
    out = export_one(run, tmp_path / "out", {"ties": "keep", "inconsistent": "keep"}, 1)
    standard = [json.loads(x) for x in (out / "standard.jsonl").read_text().splitlines()]
    judged = [r["case_id"] for r in standard if r["source"] == "pairwise"]
    assert judged == sorted(judged) and judged[0] == "c2"
    assert [r["source"] for r in standard][-2:] == ["revision", "revision"]
    candidates = [
        json.loads(x)["case_id"] for x in (out / "candidates.jsonl").read_text().split("\n") if x
    ]
    assert list(dict.fromkeys(candidates)) == ["c2", "c3", "tie", "same"]
    c2 = [r for r in standard if r["case_id"] == "c2" and r["source"] == "pairwise"]
    assert c2 and all(r["score_chosen_helpful"] is not None for r in c2)


def test_case_rows_are_the_latest_rows_of_those_cases(tmp_path: Path) -> None:
    run = spread_run(tmp_path / "run")
    data = read_run(run)
    for log in (VERDICTS, PAIRS):
        whole = data.with_rationale(log)
        reader = CaseRows(run, log, list(whole.columns))
        for ids in (["c3"], ["tie", "c2"], ["nowhere"]):
            got = reader.rows(ids)[list(whole.columns)]
            want = whole[whole["case_id"].isin(ids)].reset_index(drop=True)
            assert len(got) == len(want)
            pd.testing.assert_frame_equal(got, want, check_dtype=False)
    redone = CaseRows(run, VERDICTS, ["rationale", "score"]).rows(["c3"])
    z = redone[redone["item_id"] == "pj-c3-z-helpful"]
    assert list(z["rationale"]) == ["redone"] and list(z["score"]) == [1.0]


def test_chunk_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="chunk size"):
        export_one(spread_run(tmp_path / "run"), tmp_path / "out", {}, 0)


def test_progress_line() -> None:
    stream = io.StringIO()
    progress = Progress(10, quiet=False, stream=stream)
    progress.interval = 0.0
    progress.add(4)
    assert stream.getvalue().startswith("export 4/10 items")
    Progress(10, quiet=True, stream=(silent := io.StringIO())).add(10)
    assert silent.getvalue() == ""
