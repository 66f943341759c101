"""harness view without a browser: the index over a run's logs, the queries, the JSON API, the CLI.

The run folders are synthetic (harness/testing/synthetic_run.py) and real files; the index lives in
a cache folder of the test's own; the API runs on aiohttp's test server.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from harness.records import Case, Verdict
from harness.rundir import read_run
from harness.testing.synthetic_run import case_row, verdict_lines, write_fixed, write_run
from harness.view import queries
from harness.view.index import RunIndex, index_path
from harness.view.server import make_app
from tests.helpers import write_tiny_suite
from tests.view_support import HOSTILE, HOSTILE_CASE, add_hostile_case


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


def _index(root: Path) -> RunIndex:
    ix = RunIndex(root)
    ix.refresh()
    return ix


def _all(ix: RunIndex, **params: str) -> list[dict[str, Any]]:
    """Every row of a filtered listing, page by page (checks paging along the way)."""
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        got = queries.page(
            ix, queries.parse_filters({**params, "page": str(page), "per_page": "7"})
        )
        rows += got["rows"]
        if len(got["rows"]) < 7:
            assert len(rows) == got["total"]
            return rows
        page += 1


def test_synthetic_rows_are_real_records() -> None:
    for i in range(30):
        case = Case.model_validate(case_row(i))
        assert len(case.candidates) == 2
    for line in verdict_lines(30):
        Verdict.model_validate_json(line)


def test_a_run_written_by_harness_run_is_browsable(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    suite = write_tiny_suite(tmp_path)
    judge = Path(__file__).resolve().parents[1] / "judges" / "rules.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(suite), "--judge", str(judge),
         "--out", str(tmp_path / "runs"), "--run-id", "tiny"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    root = tmp_path / "runs" / "tiny"
    ix = _index(root)
    frame = read_run(root).verdicts
    rows = _all(ix)
    assert len(rows) == len(frame) > 0
    assert {r["status"] for r in rows} == set(frame["status"])
    assert set(queries.facets(ix)["tag"]) == {"cooking"}
    chat = queries.case_detail(ix, "chat")
    assert chat is not None and [m["role"] for m in chat["prompt"]] == ["user", "assistant", "user"]
    assert {c["generator"] for c in chat["candidates"]} == {"good", "bad"}
    assert {r["case_id"] for r in _all(ix, q="boil an EGG")} == {"egg"}
    ix.close()


def test_index_holds_what_the_run_folder_reader_reads(tmp_path: Path) -> None:
    root = write_run(tmp_path / "run", 40)
    ix = _index(root)
    frame = read_run(root).verdicts
    got = ix.fetch("SELECT case_id, generator, principle, judge, status, score FROM verdicts")
    assert len(got) == len(frame) == 160
    mine = {(r["case_id"], r["generator"], r["principle"]): r["score"] for r in got}
    theirs = {
        (r.case_id, r.generator, r.principle): (None if r.score != r.score else r.score)
        for r in frame.itertuples()
    }
    assert mine == theirs
    assert sorted(os.listdir(root)) == ["cases.jsonl", "constitution.json", "manifest.json",
                                        "verdicts.jsonl"]  # fmt: skip
    assert not index_path(root).is_relative_to(root)
    ix.close()


def test_refresh_reads_only_appended_whole_lines_and_later_rows_supersede(tmp_path: Path) -> None:
    root = tmp_path / "run"
    write_fixed(root, 10)
    lines = list(verdict_lines(10))
    log = root / "verdicts.jsonl"
    log.write_text("".join(lines[:15]) + lines[15][:40], encoding="utf-8")  # a torn last line
    ix = _index(root)
    assert ix.fetch("SELECT count(*) AS n FROM verdicts")[0]["n"] == 15
    with log.open("a", encoding="utf-8") as fh:
        fh.write(lines[15][40:])
        fh.write("{not json at all\n")
        fh.write("".join(lines[16:]))
        redo = json.loads(lines[0]) | {"score": 5.0, "status": "scored", "rationale": "redone"}
        fh.write(json.dumps(redo) + "\n")
    assert ix.refresh() == 1 + 1 + 24 + 1
    rows = ix.fetch("SELECT score, rationale FROM verdicts WHERE item_id = ?", [redo["item_id"]])
    assert rows == [{"score": 5.0, "rationale": "redone"}]
    assert ix.fetch("SELECT count(*) AS n FROM verdicts")[0]["n"] == 40
    assert ix.state("verdicts.jsonl").corrupt == 1
    assert ix.refresh() == 0
    ix.close()


def test_a_rewritten_log_is_read_again_from_the_start(tmp_path: Path) -> None:
    root = write_run(tmp_path / "run", 10)
    ix = _index(root)
    lines = list(verdict_lines(10, seed=7))
    (root / "verdicts.jsonl").write_text("".join(lines[:5]), encoding="utf-8")
    ix.refresh()
    got = ix.fetch("SELECT item_id, score FROM verdicts ORDER BY seq")
    assert [(r["item_id"], r["score"]) for r in got] == [
        (json.loads(x)["item_id"], json.loads(x)["score"]) for x in lines[:5]
    ]
    ix.close()


def test_the_index_survives_a_restart_and_resumes_from_its_offset(tmp_path: Path) -> None:
    root = tmp_path / "run"
    write_fixed(root, 20)
    lines = list(verdict_lines(20))
    (root / "verdicts.jsonl").write_text("".join(lines[:30]), encoding="utf-8")
    _index(root).close()
    with (root / "verdicts.jsonl").open("a", encoding="utf-8") as fh:
        fh.write("".join(lines[30:]))
    again = RunIndex(root)
    assert again.refresh() == 50  # only the appended lines are read
    assert again.fetch("SELECT count(*) AS n FROM verdicts")[0]["n"] == 80
    again.close()


def test_search_filters_sorting_and_paging(tmp_path: Path) -> None:
    root = write_run(tmp_path / "run", 50)
    ix = _index(root)
    cases = {c["id"]: c for c in (case_row(i) for i in range(50))}
    every = _all(ix)
    assert len({r["item_id"] for r in every}) == 200  # paging: each row once
    # search: a word of some prompts (any case), matching all verdicts of those cases
    hits = {r["case_id"] for r in _all(ix, q="VITAMINS")}
    want = {cid for cid, c in cases.items() if "vitamins" in json.dumps(c["prompt"]).lower()}
    assert hits == want and hits
    # search: words of one candidate's response find that candidate's verdicts
    phrase = "paper map"
    by_response = {(r["case_id"], r["generator"]) for r in _all(ix, q=phrase)}
    want_r = {
        (cid, cand["generator"])
        for cid, c in cases.items()
        for cand in c["candidates"]
        if phrase in cand["response"] or phrase in json.dumps(c["prompt"])
    }
    assert by_response == want_r and by_response
    assert {r["case_id"] for r in _all(ix, q="case-0000042")} == {"case-0000042"}
    assert _all(ix, q="100%_no_such") == []
    # filters
    rows = _all(ix, tag="medical", principle="helpfulness", score_min="2", score_max="4")
    assert rows and all(
        "medical" in cases[r["case_id"]]["tags"] and r["principle"] == "helpfulness"
        and 2 <= r["score"] <= 4 for r in rows
    )  # fmt: skip
    assert all(r["status"] == "unscored" for r in _all(ix, status="unscored"))
    scores = [r["score"] for r in _all(ix, sort="score", desc="1")]
    numbers = [s for s in scores if s is not None]
    assert numbers == sorted(numbers, reverse=True) and scores[-1] is None  # unscored last
    ix.close()


def test_case_detail_has_prompt_candidates_and_every_verdict(tmp_path: Path) -> None:
    root = write_run(tmp_path / "run", 10)
    ix = _index(root)
    detail = queries.case_detail(ix, "case-0000004")
    assert detail is not None
    case = case_row(4)
    assert detail["prompt"] == case["prompt"] and isinstance(detail["prompt"], list)
    assert detail["tags"] == case["tags"]
    assert detail["candidates"] == case["candidates"]
    assert len(detail["verdicts"]) == 4
    assert queries.case_detail(ix, "no-such-case") is None
    ix.close()


def test_bad_parameters_are_refused_with_the_reason() -> None:
    for params, words in [
        ({"sort": "bogus"}, "sort"),
        ({"score_min": "high"}, "score_min"),
        ({"page": "0"}, "page"),
        ({"per_page": "100000"}, "per_page"),
        ({"status": "fine"}, "status"),
    ]:
        with pytest.raises(queries.QueryError, match=words):
            queries.parse_filters(params)


async def _api(roots: list[Path], calls: list[tuple[str, dict[str, str]]]) -> list[Any]:
    indexes = [_index(r) for r in roots]
    out = []
    async with TestClient(TestServer(make_app(indexes, interval=0.0))) as client:
        for path, headers in calls:
            res = await client.get(path, headers=headers)
            body = await res.text()
            out.append((res.status, body, dict(res.headers)))
    for ix in indexes:
        ix.close()
    return out


def test_api_pages_cases_and_security_headers(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", 12)
    b = write_run(tmp_path / "b", 12, seed=3)
    add_hostile_case(a)
    nan = json.loads(next(verdict_lines(1, seed=2))) | {"item_id": "nan-1", "score": float("nan")}
    with (b / "verdicts.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(nan) + "\n")  # Python writes NaN, which JSON does not have
    calls = [
        ("/api/runs", {}),
        ("/api/runs/0/verdicts?q=vitamins&per_page=3&page=2", {}),
        ("/api/runs/1/facets", {}),
        (f"/api/runs/0/case?id={HOSTILE_CASE}", {}),
        ("/api/runs/0/verdicts?sort=nope", {}),
        ("/api/runs/5/facets", {}),
        ("/api/runs", {"Host": "attacker.example:80"}),
        ("/", {}),
        ("/assets/app.js", {}),
        ("/assets/../server.py", {}),
        ("/api/runs/1/case?id=case-0000000", {}),
    ]
    res = asyncio.run(_api([a, b], calls))
    runs = json.loads(res[0][1])
    assert [r["name"] for r in runs] == ["a", "b"] and runs[0]["summary"]["verdicts"] == 49
    page = json.loads(res[1][1])
    assert page["page"] == 2 and len(page["rows"]) <= 3 and page["total"] > 0
    assert json.loads(res[2][1])["principle"] == ["harmlessness", "helpfulness"]
    case = json.loads(res[3][1])
    assert case["prompt"][0]["content"] == HOSTILE and case["verdicts"][0]["rationale"] == HOSTILE
    assert res[4][0] == 400 and "sort" in json.loads(res[4][1])["error"]
    assert res[5][0] == 404
    assert res[6][0] == 403
    assert res[7][0] == 200 and "script-src 'self'" in res[7][2]["Content-Security-Policy"]
    assert res[8][0] == 200 and "textContent" in res[8][1]
    assert res[9][0] == 404
    scores = {v["item_id"]: v["score"] for v in json.loads(res[10][1])["verdicts"]}
    assert scores["nan-1"] is None  # served as JSON null, the page still parses


def test_the_page_script_never_writes_markup() -> None:
    script = (Path(queries.__file__).parent / "assets" / "app.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


def test_cli_serves_on_a_free_port_and_refuses_a_folder_that_is_no_run(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    bad = subprocess.run(
        [sys.executable, "-m", "harness.cli", "view", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "not a run folder" in bad.stderr and str(tmp_path) in bad.stderr
    assert "Traceback" not in bad.stderr
    root = write_run(tmp_path / "run", 5)
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "view", str(root), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("harness view: http://127.0.0.1:")
        url = line.split()[2]
        import urllib.request

        with urllib.request.urlopen(url + "api/runs", timeout=30) as res:
            assert json.loads(res.read())[0]["summary"]["verdicts"] == 20
    finally:
        proc.terminate()
        proc.wait(30)
