"""Engine scale: judge N items with the ``rules`` judge, then aggregate, compare and report.

    python bench/engine_scale.py            # 1,000,000 items (125,000 cases x 2 responses x 4)
    python bench/engine_scale.py --quick    # 100,000 items

Each stage runs in its own process, so its peak RSS is its own. Printed per stage: wall and CPU time
and peak RSS; for the run, verdicts/s and CPU µs per item. Two references from the same session:

- the bound: the rules judge alone scoring the same (response, principle) subjects in a plain loop,
  so ``overhead`` is what the harness adds per item on top of the judge it runs;
- a run of a tenth of the items, so ``cpu_per_item_ratio`` (big / small, 1.0 = linear) and
  ``rss_ratio`` (1.0 = flat) show how cost and memory grow with the number of items.

The report's size and headless Chromium's time to a first screenshot of it are measured too (when
Chromium is installed), and so is the whole ``harness run`` command as a user types it (default
options: the cache, the summary and the report included), from outside: ``cli_verdicts_per_s`` is
items over its wall time. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from make_scale_suite import judge_suite, measure, write_suite  # noqa: E402

ITEMS_PER_CASE = 8  # 2 responses x 4 principles the rules judge covers


def stage(name: str, folder: Path, run_dir: str = "") -> dict[str, float]:
    """Run one stage in a fresh interpreter; its own figures (time, CPU, peak RSS) come back."""
    cmd = [sys.executable, __file__, "--stage", name, "--folder", str(folder), "--run", run_dir]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _bound(folder: Path) -> dict[str, object]:
    """The rules judge alone over the same subjects: the floor any harness pays."""
    from harness.backends.base import Subject, parse_options
    from harness.backends.rules import RulesBackend
    from harness.config import load_judge

    config, path = load_judge("rules")
    judge = RulesBackend(parse_options(RulesBackend, config.options, str(path)))
    principles = ["coherence", "helpfulness", "honesty", "harmlessness"]
    n = 0
    with (folder / "scale.cases.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            for cand in json.loads(line)["candidates"]:
                for p in principles:
                    judge.judge(Subject(principle=p, response=cand["response"], prompt=[]))
                    n += 1
    return {"items": n}


def _aggregate(run_dir: str) -> dict[str, object]:
    from harness.analysis.scores import summary
    from harness.rundir import read_run

    data = read_run(run_dir)
    table = summary(data.verdicts, data.constitution, n_boot=500)
    return {"rows": len(table)}


def _compare(run_dir: str) -> dict[str, object]:
    from harness.analysis.compare import CompareOptions, compare_runs
    from harness.rundir import read_run

    cmp = compare_runs(read_run(run_dir), read_run(run_dir), CompareOptions())
    return {"rows": len(cmp.rows)}


def _report(run_dir: str) -> dict[str, object]:
    from harness.report.render import render_report

    path = render_report(run_dir)
    return {"report_mb": round(path.stat().st_size / 1e6, 2)}


def whole_cli(folder: Path) -> dict[str, float]:
    """``harness run`` as a user types it (default options: cache, summary, report), timed from
    outside: its wall time, CPU time and peak RSS as a child process.
    """
    cmd = [sys.executable, "-m", "harness.cli", "run", str(folder / "scale.yaml"), "--judge",
           "rules", "--out", str(folder / "cli"), "--quiet"]  # fmt: skip
    env = {**os.environ, "HARNESS_CACHE_DIR": str(folder / "cache"), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own CPU time and peak RSS
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"harness run failed ({child.returncode}): {' '.join(cmd)}")
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def first_paint(report: Path) -> float | None:
    """Seconds for headless Chromium to load the report and write a screenshot (None: no
    Chromium).
    """
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return None
    with tempfile.TemporaryDirectory() as profile:
        shot = Path(profile) / "shot.png"
        cmd = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update",
            f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1280,900",
            report.as_uri(),
        ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        return round(time.perf_counter() - start, 2)


STAGES = {
    "run": lambda a: judge_suite(Path(a.folder)),
    "bound": lambda a: _bound(Path(a.folder)),
    "aggregate": lambda a: _aggregate(a.run),
    "compare": lambda a: _compare(a.run),
    "report": lambda a: _report(a.run),
}


def scale(n_items: int, root: Path) -> dict[str, dict[str, float]]:
    """Every stage at one size."""
    folder = root / f"n{n_items}"
    write_suite(folder, n_items // ITEMS_PER_CASE)
    figures = {"run": stage("run", folder), "bound": stage("bound", folder)}
    run_dir = str(figures["run"]["run_dir"])
    for name in ("aggregate", "compare", "report"):
        figures[name] = stage(name, folder, run_dir)
    figures["chromium"] = {"first_paint_s": first_paint(Path(run_dir) / "report.html")}
    figures["cli"] = whole_cli(folder)
    return figures


def main() -> None:
    """Run the benchmark, or one stage of it in this process."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 items instead of 1,000,000")
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--folder", default="", help=argparse.SUPPRESS)
    parser.add_argument("--run", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(measure(lambda: STAGES[args.stage](args))))
        return
    n = 100_000 if args.quick else 1_000_000
    with tempfile.TemporaryDirectory(prefix="engine-scale-") as tmp:
        small = scale(n // 10, Path(tmp))
        big = scale(n, Path(tmp))
    print(json.dumps(summarise(n, big, small)))


def summarise(n: int, big: dict, small: dict) -> dict[str, object]:
    """The figures, one line per stage, then the JSON line."""
    for name, fig in big.items():
        print(f"{name:10s} {fig}")
    run, bound = big["run"], big["bound"]
    per_item = run["cpu_s"] / n * 1e6
    small_per_item = small["run"]["cpu_s"] / (n // 10) * 1e6
    return {
        "items": n,
        "verdicts_per_s": round(n / run["wall_s"]),
        "cpu_us_per_item": round(per_item, 1),
        "judge_cpu_us_per_item": round(bound["cpu_s"] / n * 1e6, 1),
        "overhead": round(run["cpu_s"] / bound["cpu_s"], 2),
        "run_rss_mb": run["rss_mb"],
        "cpu_per_item_ratio": round(per_item / small_per_item, 2),
        "rss_ratio": round(run["rss_mb"] / small["run"]["rss_mb"], 2),
        "aggregate_s": big["aggregate"]["wall_s"],
        "aggregate_rss_mb": big["aggregate"]["rss_mb"],
        "compare_s": big["compare"]["wall_s"],
        "compare_rss_mb": big["compare"]["rss_mb"],
        "report_s": big["report"]["wall_s"],
        "report_mb": big["report"]["report_mb"],
        "chromium_first_paint_s": big["chromium"]["first_paint_s"],
        "cli_verdicts_per_s": round(n / big["cli"]["wall_s"]),
        "cli_wall_s": big["cli"]["wall_s"],
        "cli_rss_mb": big["cli"]["rss_mb"],
    }


if __name__ == "__main__":
    main()
