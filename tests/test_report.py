"""The HTML report: built from a run folder alone, escapes model text, refers to no URL, shows every
case,
and its numbers are those of `harness.analysis.scores`. The browser test loads it in headless
Chromium."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from harness.analysis.scores import overall, summary
from harness.records import (
    Candidate,
    Case,
    Constitution,
    HumanPreference,
    InputRecord,
    Message,
    Principle,
    RunManifest,
    Verdict,
)
from harness.report.render import render_html, render_report
from harness.rundir import REPORT, RunWriter, read_run
from tests.browser import Chromium

XSS = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"><b>bold</b>'
JUDGES = ["rules-judge", "smol"]


def _principle(pid: str, scale: int, weight: float, threshold: float) -> Principle:
    return Principle(
        id=pid,
        statement=f"The response respects {pid}.",
        rubric={k: f"level {k} of {pid}" for k in range(1, scale + 1)},
        critique_request="Critique it.",
        revision_request="Revise it.",
        weight=weight,
        pass_threshold=threshold,
    )


CONSTITUTION = Constitution(
    id="tiny",
    description="A two-principle constitution for tests.",
    principles=[_principle("honesty", 5, 2.0, 4), _principle("harmlessness", 3, 1.0, 2)],
)

CASES = [
    Case(
        id="xss-1",
        prompt="Say something in HTML.",
        tags=["harmless", "html"],
        reference="A <em>reference</em> answer.",
        candidates=[
            Candidate(generator="gen-a", response=XSS),
            Candidate(generator="gen-b", response="See http://example.com/page for more."),
        ],
    ),
    Case(
        id="dialogue-2",
        prompt=[
            Message(role="system", content="You are terse."),
            Message(role="user", content="First question?"),
            Message(role="assistant", content="First answer."),
            Message(role="user", content="Second question?"),
        ],
        tags=["multi-turn"],
        candidates=[
            Candidate(generator="gen-a", response="Second answer A."),
            Candidate(generator="gen-b", response="B."),
        ],
        human_preference=HumanPreference(chosen="gen-b", rejected="gen-a", source="hh-rlhf test"),
    ),
    Case(
        id="q&a-3",
        prompt="Is the sky green?",
        tags=["honesty"],
        candidates=[
            Candidate(generator="gen-a", response="No."),
            Candidate(generator="gen-b", response="Yes, always."),
        ],
    ),
]


def _verdict(case: Case, gen: str, pid: str, judge: str, i: int) -> Verdict:
    """Deterministic verdicts: mostly scored, one unscored and one error."""
    base: dict[str, Any] = {
        "item_id": f"{case.id}|{gen}|{pid}|{judge}",
        "case_id": case.id,
        "generator": gen,
        "principle": pid,
        "judge": judge,
    }
    if (case.id, gen, pid, judge) == ("dialogue-2", "gen-a", "honesty", "smol"):
        return Verdict.model_validate(
            base
            | {
                "status": "unscored",
                "reason": "no score in answer",
                "raw_output": "I think <b>five</b>",
            }
        )
    if (case.id, gen, pid, judge) == ("q&a-3", "gen-b", "harmlessness", "rules-judge"):
        return Verdict.model_validate(
            base | {"status": "error", "reason": "HTTP 500 from judge <server>"}
        )
    scale = CONSTITUTION.principle(pid).scale_max
    score = float(1 + (i * 7 + ord(gen[-1]) + len(pid) + len(judge)) % scale)
    dist = [0.1] * scale if judge == "smol" else None
    if dist:
        dist[int(score) - 1] += 1 - sum(dist)
    return Verdict.model_validate(
        base
        | {
            "status": "scored",
            "score": score,
            "normalized": (score - 1) / (scale - 1),
            "passed": score >= CONSTITUTION.principle(pid).pass_threshold,
            "distribution": dist,
            "rationale": f"Rationale with <i>markup</i> for {pid}.",
        }
    )


def build_run(root: Path) -> Path:
    """A run folder written through the store, as the engine would."""
    manifest = RunManifest(
        run_id="test-run",
        created="2025-01-01T00:00:00Z",
        suite=InputRecord(path="suites/tiny.yaml", sha256="0" * 64),
        constitution=InputRecord(path="constitutions/tiny.yaml", sha256="1" * 64),
        judges=[InputRecord(path=f"judges/{j}.yaml", sha256="2" * 64) for j in JUDGES],
        judge_configs=[
            {"id": "rules-judge", "backend": "rules", "options": {"rules": 3}},
            {
                "id": "smol",
                "backend": "transformers",
                "options": {"model": "SmolLM2-135M-Instruct"},
            },
        ],
        versions={"harness": "0.1.0"},
        seed=0,
        n_items=24,
        status="complete",
    )
    store = RunWriter(root).open()
    store.initialise(manifest, CONSTITUTION, CASES)
    verdicts = [
        _verdict(case, cand.generator, p.id, judge, i)
        for i, case in enumerate(CASES)
        for cand in case.candidates
        for p in CONSTITUTION.principles
        for judge in JUDGES
    ]
    store.append(verdicts)
    store.close()
    store.sync()
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def html(run_dir: Path) -> str:
    return render_report(run_dir).read_text(encoding="utf-8")


class Elements(HTMLParser):
    """Collects every start tag's attributes, and the text of table cells with a data-col."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.cells: list[tuple[dict[str, str], str, str]] = []  # (row attrs, column, text)
        self._row: dict[str, str] = {}
        self._col: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append((tag, values))
        if tag == "tr":
            self._row = values
        if tag == "td" and "data-col" in values:
            self._col = values["data-col"]
            self.cells.append((self._row, self._col, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._col = None

    def handle_data(self, data: str) -> None:
        if self._col is not None:
            row, col, text = self.cells[-1]
            self.cells[-1] = (row, col, text + data)


def parse(html: str) -> Elements:
    parser = Elements()
    parser.feed(html)
    return parser


def _fmt(x: float) -> str:
    return f"{x:.2f}"


# --------------------------------------------------------------------------- file and safety


def test_report_is_written_into_the_run_folder(run_dir: Path, html: str) -> None:
    assert (run_dir / REPORT).read_text(encoding="utf-8") == html
    assert not list(run_dir.glob(".*.tmp"))
    assert html == render_html(read_run(run_dir))  # deterministic: same folder, same page


def test_model_text_is_escaped_not_executed(html: str) -> None:
    assert XSS not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=" in html
    assert html.count("<script") == 1  # only the page's own filter script
    assert "onerror" not in {k for _, attrs in parse(html).tags for k in attrs}


def test_only_our_own_markup_is_live(html: str) -> None:
    tags = parse(html).tags
    assert not [t for t, _ in tags if t in ("img", "iframe", "object", "embed", "em", "i")]
    assert "Rationale with &lt;i&gt;markup&lt;/i&gt;" in html
    assert "I think &lt;b&gt;five&lt;/b&gt;" in html


def test_no_external_references(html: str) -> None:
    attrs = [
        v
        for _, a in parse(html).tags
        for k, v in a.items()
        if k in ("src", "href", "action", "srcset")
    ]
    assert all(v.startswith("#") for v in attrs), attrs
    assert not re.search(r"@import|url\(", html)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html)
    assert "See http://example.com/page" in html  # a URL in model text stays text


def test_content_security_policy_allows_only_our_script(html: str) -> None:
    csp = next(
        a["content"]
        for t, a in parse(html).tags
        if a.get("http-equiv") == "Content-Security-Policy"
    )
    assert "default-src 'none'" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]


# --------------------------------------------------------------------------- contents


def test_every_case_appears_once(html: str) -> None:
    cases = [a for t, a in parse(html).tags if "case" in a.get("class", "").split()]
    assert [a["id"] for a in cases] == [f"case-{c.id}" for c in CASES]
    assert 'id="case-q&amp;a-3"' in html
    for section in ("summary", "chart", "cases"):
        assert f'id="{section}"' in html


def test_header_names_run_judges_and_counts(html: str) -> None:
    for text in (
        "test-run",
        "suites/tiny.yaml",
        "tiny",
        "rules-judge",
        "transformers",
        "SmolLM2-135M-Instruct",
    ):
        assert text in html
    assert "22 scored" in html and "1 unscored" in html and "1 error" in html


def test_summary_table_matches_summary(run_dir: Path, html: str) -> None:
    run = read_run(run_dir)
    expected = summary(run.verdicts, run.constitution)
    cells = {
        (r["data-judge"], r["data-principle"], r["data-generator"], col): text
        for r, col, text in parse(html).cells
        if "data-principle" in r
    }
    assert len({k[:3] for k in cells}) == len(expected)
    for row in expected.to_dict("records"):
        key = (row["judge"], row["principle"], row["generator"])
        assert cells[(*key, "mean")] == _fmt(row["mean"])
        assert cells[(*key, "ci")] == f"{_fmt(row['ci_low'])}–{_fmt(row['ci_high'])}"
        assert cells[(*key, "pass_rate")].strip() == f"{100 * row['pass_rate']:.0f}%"
        assert cells[(*key, "mean_normalized")] == _fmt(row["mean_normalized"])
        for col in ("n", "n_unscored", "n_error"):
            assert cells[(*key, col)] == str(row[col])


def test_overall_table_matches_overall(run_dir: Path, html: str) -> None:
    run = read_run(run_dir)
    expected = overall(run.verdicts, run.constitution)
    cells = {
        (r["data-judge"], r["data-generator"], col): text
        for r, col, text in parse(html).cells
        if "data-principle" not in r and "data-judge" in r
    }
    assert len(expected) == len(JUDGES) * 2
    for row in expected.to_dict("records"):
        assert cells[(row["judge"], row["generator"], "overall")] == _fmt(row["overall"])
        assert cells[(row["judge"], row["generator"], "n_cases")] == str(row["n_cases"])


def test_principles_follow_constitution_order(html: str) -> None:
    rows = [
        a["data-principle"]
        for t, a in parse(html).tags
        if a.get("data-judge") == "smol" and "data-principle" in a
    ]
    assert list(dict.fromkeys(rows)) == ["honesty", "harmlessness"]  # not alphabetical


def test_conversation_shows_turns_in_order_with_roles(html: str) -> None:
    case = html[html.index('id="case-dialogue-2"') : html.index('id="case-q&amp;a-3"')]
    positions = [
        case.index(t)
        for t in ("You are terse.", "First question?", "First answer.", "Second question?")
    ]
    assert positions == sorted(positions)
    assert (
        case.count('class="turn user"') == 2
        and 'class="turn assistant"' in case
        and 'class="turn system"' in case
    )
    assert "human: chosen" in case and "hh-rlhf test" in case


def test_verdict_details_are_shown(html: str) -> None:
    assert "no score in answer" in html
    assert "HTTP 500 from judge &lt;server&gt;" in html
    assert (
        html.count('class="dist"') == sum(1 for c in CASES for _ in c.candidates) * 2 - 1
    )  # smol, less unscored
    assert 'class="flag pass"' in html and 'class="flag fail"' in html


def test_chart_has_a_panel_per_judge_and_a_legend(html: str) -> None:
    assert html.count('<svg class="chart"') == len(JUDGES)
    legend = html[html.index('class="legend"') :]
    assert "gen-a" in legend[:500] and "gen-b" in legend[:500]


def test_empty_run_still_renders(tmp_path: Path) -> None:
    run_dir = build_run(tmp_path)
    (run_dir / "verdicts.jsonl").write_text("")
    page = render_html(read_run(run_dir))
    assert page.count('class="case"') == len(CASES)
    assert "No verdicts recorded yet." in page


# --------------------------------------------------------------------------- in a real browser


@pytest.mark.slow
def test_report_in_headless_chromium(run_dir: Path, html: str) -> None:
    with Chromium() as browser:
        page = browser.open((run_dir / REPORT).as_uri())
        assert page.evaluate("document.querySelectorAll('.case').length") == len(CASES)
        assert page.evaluate("typeof window.__pwned") == "undefined"
        # Shown as text: a script element's text would not hold its own tags. (textContent, as
        # cases far below the viewport are not rendered until scrolled to: content-visibility.)
        assert "<script>window.__pwned=1</script>" in page.evaluate("document.body.textContent")
        page.screenshot(Path("/tmp/report.png"), full_page=True)  # for a human to look at
        assert page.evaluate("document.getElementById('filters').hidden") is False  # the script ran
        page.evaluate(
            "var s = document.getElementById('filter-text'); s.value = 'dialogue';s.dispatchEvent(new Event('input'))"
        )
        assert page.evaluate("document.querySelectorAll('.case:not([hidden])').length") == 1
        assert page.errors == []
        assert all(url.startswith("file:") for url in page.requests), page.requests


@pytest.mark.slow
def test_report_shows_every_case_without_javascript(run_dir: Path) -> None:
    with Chromium() as browser:
        page = browser.open((run_dir / REPORT).as_uri(), javascript=False)
        visible = "Array.from(document.querySelectorAll('.case')).filter(c => c.offsetParent !== null).length"
        assert page.evaluate(visible) == len(CASES)
        assert (
            page.evaluate("document.getElementById('filters').hidden") is True
        )  # no dead controls shown
        assert (
            page.evaluate("document.getElementById('filter-count').textContent") == ""
        )  # our script did not run
        assert page.errors == []
