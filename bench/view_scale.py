"""How `harness view` scales: index build, refreshes and the queries behind a page, at 1M verdicts.

    python bench/view_scale.py            # 250,000 cases x 2 candidates x 2 principles: 1M
    python bench/view_scale.py --quick    # 25,000 cases = 100,000 verdicts
    python bench/view_scale.py --run DIR  # reuse (or first write) the synthetic run folder DIR

The reference, measured in the same process, is the design the index replaces: DuckDB reading
the JSONL logs directly for every request (``read_json`` over verdicts.jsonl and cases.jsonl). Each
query is timed both ways where both exist; the ratio is index time / direct time. Ends with one
JSON line. Wall times on a shared machine move with its load; CPU seconds (this process, DuckDB's
threads included) are printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.testing.synthetic_run import verdict_lines, write_run


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds, result) of one call."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def ensure_run(root: Path, cases: int) -> float:
    """Write the synthetic run unless ``root`` already holds one of this size; returns seconds."""
    manifest = root / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text())["n_items"] == 4 * cases:
        return 0.0
    wall, _, _ = timed(lambda: write_run(root, cases))
    return wall


def direct_queries(root: Path) -> dict[str, Callable[[], Any]]:
    """The same questions asked of the JSONL logs without an index (the reference)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads=2")
    v = f"read_json('{root / 'verdicts.jsonl'}', format='newline_delimited', ignore_errors=true)"
    c = f"read_json('{root / 'cases.jsonl'}', format='newline_delimited', ignore_errors=true)"
    return {
        "filter": lambda: con.execute(
            f"SELECT count(*) FROM {v} WHERE principle = 'helpfulness' AND score >= 4"
        ).fetchall(),
        "search_rationale": lambda: con.execute(
            f"SELECT count(*) FROM {v} WHERE contains(lower(rationale), 'caveat')"
        ).fetchall(),
        "search_prompt": lambda: con.execute(
            f"SELECT count(*) FROM {v} WHERE case_id IN (SELECT id FROM {c} "
            "WHERE contains(lower(CAST(prompt AS VARCHAR)), 'vitamins'))"
        ).fetchall(),
    }


def main() -> int:
    """Run the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="100,000 verdicts instead of 1,000,000")
    p.add_argument("--run", type=Path, help="synthetic run folder to reuse (written if missing)")
    args = p.parse_args()
    cases = 25_000 if args.quick else 250_000
    work = Path(tempfile.mkdtemp(prefix="view-bench-"))
    root = args.run or work / "run"
    os.environ["HARNESS_CACHE_DIR"] = str(work / "cache")  # a cold index, built here
    gen_s = ensure_run(root, cases)
    from harness.view import queries as Q
    from harness.view.index import RunIndex, index_path

    ix = RunIndex(root)
    build_w, build_c, _ = timed(ix.refresh)
    figures: dict[str, Any] = {
        "verdicts": 4 * cases,
        "jsonl_mb": round(sum(f.stat().st_size for f in root.glob("*.jsonl")) / 1e6, 1),
        "generate_s": round(gen_s, 1),
        "index_build_s": round(build_w, 1),
        "index_build_cpu_s": round(build_c, 1),
        "index_mb": round(index_path(root).stat().st_size / 1e6, 1),
    }
    noop_w, _, _ = timed(ix.refresh)
    more = list(verdict_lines(cases // 100, seed=9))  # 1% more lines: redone verdicts
    with (root / "verdicts.jsonl").open("a", encoding="utf-8") as fh:
        fh.write("".join(more))
    grow_w, _, added = timed(ix.refresh)
    figures |= {"refresh_noop_s": round(noop_w, 3), f"refresh_{added}_lines_s": round(grow_w, 2)}

    def q(**params: str) -> Callable[[], Any]:
        return lambda: Q.page(ix, Q.parse_filters(params))

    mine = {
        "page_1": q(),
        "page_deep": q(page=str(cases * 4 // 50 // 2)),
        "sort_score_deep": q(sort="score", desc="1", page="500"),
        "filter": q(principle="helpfulness", score_min="4"),
        "filter_tag_status": q(tag="medical", status="scored", score_max="2"),
        "search_rationale": q(q="caveat"),
        "search_rationale_page_2": q(q="caveat", page="2"),
        "search_prompt": q(q="vitamins"),
        "search_response": q(q="paper map", sort="score"),
        "search_case_id": q(q=f"case-{cases // 2:07d}"),
        "case_detail": lambda: Q.case_detail(ix, f"case-{cases // 3:07d}"),
        "facets": lambda: Q.facets(ix),
        "summary": lambda: Q.summary(ix),
    }
    print(f"{'query':26} {'wall s':>8} {'cpu s':>8} {'direct s':>9} {'ratio':>7}")
    direct = direct_queries(root)
    for name, fn in mine.items():
        wall, cpu, _ = timed(fn)
        figures[f"{name}_s"] = round(wall, 3)
        line = f"{name:26} {wall:8.3f} {cpu:8.3f}"
        if name in direct:
            ref, _, _ = timed(direct[name])
            figures[f"{name}_direct_s"] = round(ref, 2)
            line += f" {ref:9.2f} {wall / ref:7.3f}"
        print(line)
    ix.close()
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    figures["load_avg_1m"] = round(os.getloadavg()[0], 1)
    for k in ("jsonl_mb", "index_build_s", "index_mb", "peak_rss_mb", "load_avg_1m"):
        print(f"{k}: {figures[k]}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
