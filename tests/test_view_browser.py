"""harness view in a real headless Chromium, driven by Playwright for Python.

Types a search, pages, filters, opens a case, shows two runs side by side, follows a run folder that
is appended to during the test, and checks that hostile text stays text. Chromium is the system one
(Debian's ``chromium``); Playwright's own browser download is never used. Skipped, with the reason,
when either is missing.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.testing.synthetic_run import case_row, verdict_lines, write_fixed, write_run
from tests.browser import chromium_path
from tests.view_support import HOSTILE, HOSTILE_CASE, add_hostile_case, served

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update",
]  # fmt: skip
WAIT_MS = 30_000


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        pytest.skip("headless Chromium not found (apt-get install -y chromium, or set $CHROMIUM)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _open(browser: Any, url: str) -> tuple[Any, list[str]]:
    # The page's CSP forbids eval, which Playwright's wait_for_function needs; bypassing it also
    # means the hostile-text test shows the page renders text safely on its own, CSP or not.
    page = browser.new_page(bypass_csp=True)
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: None if r.url.startswith(url) else errors.append(r.url))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    return page, errors


def _total(page: Any) -> int:
    match = re.match(r"(\d+) verdicts", page.text_content("#total") or "")
    return int(match.group(1)) if match else -1


def _wait_total(page: Any, want: int) -> None:
    page.wait_for_function(
        "n => document.getElementById('total').textContent === n + ' verdicts'", arg=want
    )


def _rows(page: Any) -> list[list[str]]:
    return page.eval_on_selector_all(
        "#results tbody tr", "trs => trs.map(tr => [...tr.cells].map(td => td.textContent))"
    )


def test_search_page_filter_open_a_case_and_compare_two_runs(browser: Any, tmp_path: Path) -> None:
    a = write_run(tmp_path / "run-a", 60)
    b = write_run(tmp_path / "run-b", 60, seed=5)
    with served([a, b]) as url:
        page, problems = _open(browser, url)
        _wait_total(page, 240)
        assert len(_rows(page)) == 50
        assert page.text_content("#page-info") == "page 1 of 5"
        # type a search: only verdicts of cases that mention it
        page.fill("#q", "")
        page.type("#q", "vitamins", delay=20)
        with_vitamins = {
            json.loads(line)["id"]
            for line in (a / "cases.jsonl").read_text(encoding="utf-8").splitlines()
            if "vitamins" in line.lower()
        }
        page.wait_for_function("document.getElementById('total').textContent !== '240 verdicts'")
        found = _total(page)
        assert 0 < found < 240
        # page through the results: every row belongs to a matching case, none twice
        seen: list[tuple[str, ...]] = []
        while True:
            rows = _rows(page)
            seen += [tuple(r[:4]) for r in rows]
            if page.is_disabled("#next"):
                break
            before = page.text_content("#page-info")
            page.click("#next")
            page.wait_for_function(
                "t => document.getElementById('page-info').textContent !== t", arg=before
            )
        assert len(seen) == len(set(seen)) == found
        assert {r[0] for r in seen} <= with_vitamins
        # filters: principle and status, then a score range
        page.fill("#q", "")
        page.select_option("#principle", "helpfulness")
        page.select_option("#status", "scored")
        page.fill("#score-min", "4")
        page.press("#score-min", "Enter")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#results tbody tr')].every("
            "tr => tr.cells[2].textContent === 'helpfulness' "
            "&& Number(tr.cells[5].textContent) >= 4)"
            " && document.querySelectorAll('#results tbody tr').length > 0"
        )
        # open a case, with run B side by side
        page.select_option("#run-b", "1")
        first = page.text_content("#results tbody tr .case-link")
        page.click("#results tbody tr .case-link")
        page.wait_for_selector("#case-view:not([hidden])")
        assert page.text_content("#case-title") == first
        assert page.locator("#case-candidates .candidate").count() == 2
        assert page.locator("#case-verdicts .verdict").count() == 4
        page.wait_for_selector("#case-compare:not([hidden])")
        compare = page.eval_on_selector_all(
            "#compare-table tbody tr", "trs => trs.map(tr => [...tr.cells].map(c => c.textContent))"
        )
        assert len(compare) == 4 and all("not judged" not in " ".join(r) for r in compare)
        page.click("#back")
        page.wait_for_selector("#list-view:not([hidden])")
        assert problems == []


def test_follows_a_run_folder_while_it_is_written(browser: Any, tmp_path: Path) -> None:
    root = tmp_path / "live"
    write_fixed(root, 100)
    lines = list(verdict_lines(100))
    log = root / "verdicts.jsonl"
    log.write_text("".join(lines[:20]), encoding="utf-8")
    stop = threading.Event()
    with_vitamins = sum("vitamins" in json.dumps(case_row(i)["prompt"]) for i in range(100))

    def writer() -> None:
        # Appends in bursts, leaving a torn line between bursts, as a crash-safe writer would.
        with log.open("a", encoding="utf-8") as fh:
            for start in range(20, 400, 40):
                if stop.is_set():
                    return
                burst = "".join(lines[start : start + 40])
                fh.write(burst[:-30])
                fh.flush()
                time.sleep(0.3)
                fh.write(burst[-30:])
                fh.flush()
                time.sleep(0.3)

    with served([root]) as url:
        page, problems = _open(browser, url)
        _wait_total(page, 20)
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            page.wait_for_function(
                "() => { const n = parseInt(document.getElementById('total').textContent);"
                " return n > 20 && n < 400; }"
            )
            # search while the run grows: the answer follows the log to the last case
            page.type("#q", "vitamins", delay=20)
            _wait_total(page, 4 * with_vitamins)
        finally:
            stop.set()
            thread.join(30)
        page.wait_for_function(
            "() => document.getElementById('summary').textContent.startsWith('400 verdicts')"
        )
        page.click("#results tbody tr .case-link")
        page.wait_for_selector("#case-view:not([hidden])")
        assert page.locator("#case-verdicts .verdict").count() == 4
        page.click("#back")
        page.fill("#q", "")
        page.select_option("#sort", "written")
        page.check("#desc")
        page.wait_for_function(
            "() => document.querySelector('#results tbody tr .case-link')"
            "?.textContent === 'case-0000099'"
        )
        assert problems == []


def test_hostile_text_is_shown_as_text(browser: Any, tmp_path: Path) -> None:
    root = write_run(tmp_path / "run", 3)
    add_hostile_case(root)
    with served([root]) as url:
        page, problems = _open(browser, url)
        page.type("#q", "<script>")
        _wait_total(page, 1)
        assert page.text_content("#results tbody tr .case-link") == HOSTILE_CASE
        page.click("#results tbody tr .case-link")
        page.wait_for_selector("#case-view:not([hidden])")
        shown = page.text_content("#case-prompt pre")
        assert shown == HOSTILE  # every character, control characters included
        assert page.text_content("#case-candidates pre") == HOSTILE
        assert page.text_content("#case-verdicts pre.rationale") == HOSTILE
        assert page.evaluate("window.__pwned") is None
        for where in ("#case-view", "#results"):
            assert page.locator(f"{where} script, {where} img, {where} b, {where} i").count() == 0
        assert page.text_content("#case-title") == HOSTILE_CASE
        assert problems == []
