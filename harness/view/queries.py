"""The questions the viewer asks of a run index: a page of verdicts, the facets, one case.

Every query reads columns in DuckDB and returns one page (or one case) to Python, so the cost in
memory does not grow with the run. User input only ever reaches SQL as bound parameters; sort keys
and directions are checked against fixed lists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, get_args

from harness.records import VerdictStatus
from harness.view.index import RunIndex

MAX_PER_PAGE = 200
SORTS = {
    "case": "case_id",
    "score": "score",
    "principle": "principle",
    "judge": "judge",
    "generator": "generator",
    "status": "status",
    "written": "seq",
}
STATUSES = get_args(VerdictStatus)  # scored, unscored, error
SNIPPET = 200  # characters of rationale and reason shown in a list row


class QueryError(ValueError):
    """A request parameter that cannot be used (the message says which and why)."""


@dataclass
class Filters:
    """What a list request asks for; every field optional."""

    q: str = ""
    tag: str = ""
    principle: str = ""
    judge: str = ""
    generator: str = ""
    status: str = ""
    score_min: float | None = None
    score_max: float | None = None
    sort: str = "case"
    desc: bool = False
    page: int = 1
    per_page: int = 50


def _number(params: dict[str, str], key: str) -> float | None:
    text = params.get(key, "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise QueryError(f"{key}: expected a number, got {text!r}") from None


def _int(params: dict[str, str], key: str, default: int, low: int, high: int) -> int:
    text = params.get(key, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise QueryError(f"{key}: expected a whole number, got {text!r}") from None
    if not low <= value <= high:
        raise QueryError(f"{key}: expected {low}..{high}, got {value}")
    return value


def parse_filters(params: dict[str, str]) -> Filters:
    """Filters from query-string parameters; raises QueryError naming a bad one."""
    sort = params.get("sort", "case") or "case"
    if sort not in SORTS:
        raise QueryError(f"sort: expected one of {', '.join(SORTS)}, got {sort!r}")
    status = params.get("status", "")
    if status and status not in STATUSES:
        raise QueryError(f"status: expected one of {', '.join(STATUSES)}, got {status!r}")
    return Filters(
        q=params.get("q", "").strip()[:500],
        tag=params.get("tag", ""),
        principle=params.get("principle", ""),
        judge=params.get("judge", ""),
        generator=params.get("generator", ""),
        status=status,
        score_min=_number(params, "score_min"),
        score_max=_number(params, "score_max"),
        sort=sort,
        desc=params.get("desc", "") in ("1", "true"),
        page=_int(params, "page", 1, 1, 10**9),
        per_page=_int(params, "per_page", 50, 1, MAX_PER_PAGE),
    )


def _search(ix: RunIndex, text: str) -> None:
    """Fill the temp table ``hits`` with the verdicts that contain ``text``.

    The case id, prompt, response, rationale or reason is searched, in any case; the table is
    kept while the same text is asked of the same rows.
    """
    if ix.searched == (text, ix.generation):
        return
    ix.con.execute(
        "CREATE OR REPLACE TEMP TABLE hits AS SELECT seq FROM verdicts "
        "WHERE contains(note_lc, lower($1)) "
        "OR cg IN (SELECT cg FROM responses WHERE contains(haystack, lower($1)))",
        [text],
    )
    ix.searched = (text, ix.generation)


def where(f: Filters) -> tuple[str, list[Any]]:
    """The WHERE clause (over ``verdicts v``) for a set of filters, with its parameters."""
    conds: list[str] = []
    params: list[Any] = []
    for col in ("principle", "judge", "generator", "status"):
        value = getattr(f, col)
        if value:
            conds.append(f"v.{col} = ?")
            params.append(value)
    if f.score_min is not None:
        conds.append("v.score >= ?")
        params.append(f.score_min)
    if f.score_max is not None:
        conds.append("v.score <= ?")
        params.append(f.score_max)
    if f.tag:
        conds.append("v.case_id IN (SELECT case_id FROM cases WHERE list_contains(tags, ?))")
        params.append(f.tag)
    if f.q:
        conds.append("v.seq IN (SELECT seq FROM hits)")  # filled by _search
    return (" WHERE " + " AND ".join(conds) if conds else ""), params


def page(ix: RunIndex, f: Filters) -> dict[str, Any]:
    """One page of verdict rows matching ``f``, with the total count."""
    clause, params = where(f)
    order = SORTS[f.sort]
    direction = "DESC" if f.desc else "ASC"
    with ix.lock:
        if f.q:
            _search(ix, f.q)
        total_row = ix.one(f"SELECT count(*) FROM verdicts v{clause}", params)
        total = int(total_row[0]) if total_row else 0
        # Two steps: sort only the key columns to find the page, then read the page's rows.
        sort = f"ORDER BY v.{order} {direction} NULLS LAST, v.seq"
        rows = ix.fetch(
            "SELECT v.seq, v.item_id, v.case_id, v.generator, v.principle, v.judge, v.status, "
            f"v.score, v.passed, left(v.rationale, {SNIPPET}) AS rationale, "
            f"left(v.reason, {SNIPPET}) AS reason FROM verdicts v WHERE v.seq IN "
            f"(SELECT v.seq FROM verdicts v{clause} {sort} LIMIT ? OFFSET ?) {sort}",
            [*params, f.per_page, (f.page - 1) * f.per_page],
        )
    return {"total": total, "page": f.page, "per_page": f.per_page, "rows": rows}


def facets(ix: RunIndex) -> dict[str, list[str]]:
    """The values each filter can take, for the filter menus."""
    out: dict[str, list[str]] = {}
    with ix.lock:
        for col in ("principle", "judge", "generator", "status"):
            rows = ix.con.execute(
                f"SELECT DISTINCT {col} FROM verdicts ORDER BY 1 LIMIT 1000"
            ).fetchall()
            out[col] = [r[0] for r in rows]
        tags = ix.con.execute(
            "SELECT DISTINCT t FROM (SELECT unnest(tags) AS t FROM cases) ORDER BY 1 LIMIT 1000"
        ).fetchall()
        out["tag"] = [r[0] for r in tags]
    return out


def case_detail(ix: RunIndex, case_id: str) -> dict[str, Any] | None:
    """One case: prompt or conversation, tags, each candidate's response, every verdict."""
    with ix.lock:
        found = ix.fetch(
            "SELECT case_id, prompt, tags, reference, human_preference FROM cases "
            "WHERE case_id = ?",
            [case_id],
        )
        verdicts = ix.fetch(
            "SELECT seq, item_id, generator, principle, judge, status, score, normalized, passed, "
            "rationale, raw_output, reason, tokens_in, tokens_out, latency_s, cached, attempts "
            "FROM verdicts WHERE case_id = ? ORDER BY generator, principle, judge",
            [case_id],
        )
        if not found and not verdicts:
            return None
        responses = ix.fetch(
            "SELECT generator, response FROM responses WHERE case_id = ? ORDER BY generator",
            [case_id],
        )
        pairs = ix.fetch(
            'SELECT principle, judge, "first", "second", status, p_first, winner, rationale, '
            'reason FROM pairs WHERE case_id = ? ORDER BY principle, judge, "first", "second"',
            [case_id],
        )
    case = found[0] if found else {"case_id": case_id, "prompt": None, "tags": []}
    prompt = json.loads(case["prompt"]) if case.get("prompt") else None
    human = case.get("human_preference")
    return {
        "case_id": case_id,
        "prompt": prompt,
        "tags": case.get("tags") or [],
        "reference": case.get("reference"),
        "human_preference": json.loads(human) if human else None,
        "candidates": responses,
        "verdicts": verdicts,
        "pairs": pairs,
    }


def summary(ix: RunIndex) -> dict[str, Any]:
    """Counts for the header: verdicts by status, cases, corrupt lines skipped, bytes read."""
    with ix.lock:
        by_status = dict(
            ix.con.execute("SELECT status, count(*) FROM verdicts GROUP BY 1").fetchall()
        )
        cases_row = ix.one("SELECT count(*) FROM cases")
        pairs_row = ix.one("SELECT count(*) FROM pairs")
        logs = ix.fetch("SELECT log, offset_ AS bytes_read, corrupt FROM logs ORDER BY log")
    return {
        "verdicts": sum(by_status.values()),
        "by_status": by_status,
        "cases": int(cases_row[0]) if cases_row else 0,
        "pairs": int(pairs_row[0]) if pairs_row else 0,
        "logs": logs,
    }
