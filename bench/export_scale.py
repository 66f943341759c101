"""Export scale: ``harness export preferences`` on a run of N verdicts from the ``rules`` judge.

    python bench/export_scale.py            # 1,000,000 verdicts (125,000 cases x 2 responses x 4)
    python bench/export_scale.py --quick    # 100,000 verdicts
    python bench/export_scale.py --quick --reference DIR   # also the export of the checkout at DIR

The run folder is made first (the engine, ``use_cache=False``); then the export runs in a fresh
interpreter, so its wall time, CPU time and peak RSS are its own. References measured in the same
session:

- the same at a tenth of the verdicts: ``rss_ratio`` (big / small; 1.0 = flat memory) and
  ``cpu_per_item_ratio`` (1.0 = linear time);
- with ``--reference DIR``, a checkout of another version (e.g. ``git worktree add /tmp/old
  <commit>``) exporting the same run folders: ``old_new`` ratios of wall time, CPU and peak RSS,
  and whether every file it wrote has the same rows (``same_output``).

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from make_scale_suite import judge_suite, measure, write_suite  # noqa: E402

ITEMS_PER_CASE = 8  # 2 responses x 4 principles the rules judge covers
TEXT_FILES = ("standard.jsonl", "conversational.jsonl", "candidates.jsonl", "README.md")
PARQUET = ("standard.parquet", "conversational.parquet", "candidates.parquet")


def stage(name: str, code: Path, *args: str) -> dict[str, object]:
    """Run one stage in a fresh interpreter importing ``harness`` from ``code``; its figures."""
    cmd = [sys.executable, __file__, "--stage", name, *args]
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=code, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _export(run_dir: str, out: str) -> dict[str, object]:
    from harness.outputs.export import export_preferences

    summary = export_preferences(run_dir, out).summary
    return {"kept": summary["counts"]["kept"], "candidates": summary["candidates"]}


def fingerprint(out: Path) -> dict[str, str]:
    """A hash per file of the rows it holds (Parquet read in batches: never whole in memory)."""
    import pyarrow.parquet as pq

    found = {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in TEXT_FILES}
    summary = json.loads((out / "export.json").read_text(encoding="utf-8"))
    found["export.json"] = hashlib.sha256(json.dumps(summary).encode()).hexdigest()
    for name in PARQUET:
        digest = hashlib.sha256(str(pq.read_schema(out / name)).encode())
        for batch in pq.ParquetFile(out / name).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                digest.update(json.dumps(row, sort_keys=True).encode())
        found[name] = digest.hexdigest()
    return found


def scale(n_items: int, root: Path, reference: Path | None) -> dict[str, dict[str, object]]:
    """Make a run of ``n_items`` verdicts, then export it (and with the reference, when given)."""
    folder = root / f"n{n_items}"
    write_suite(folder, n_items // ITEMS_PER_CASE)
    figures = {"run": stage("run", ROOT, "--folder", str(folder))}
    run_dir = str(figures["run"]["run_dir"])
    figures["export"] = stage("export", ROOT, "--run", run_dir, "--folder", str(folder / "new"))
    if reference is not None:
        old = folder / "old"
        figures["reference"] = stage("export", reference, "--run", run_dir, "--folder", str(old))
        figures["reference"]["same_output"] = fingerprint(old) == fingerprint(folder / "new")
    return figures


def summarise(n: int, big: dict, small: dict) -> dict[str, object]:
    """The figures, one line per stage, then the JSON object."""
    for label, figs in (("small", small), ("big", big)):
        for name, fig in figs.items():
            print(f"{label:5s} {name:9s} {fig}")
    new, small_new = big["export"], small["export"]
    result: dict[str, object] = {
        "verdicts": n,
        "export_wall_s": new["wall_s"],
        "export_cpu_s": new["cpu_s"],
        "export_rss_mb": new["rss_mb"],
        "small_export_rss_mb": small_new["rss_mb"],
        "rss_ratio": round(new["rss_mb"] / small_new["rss_mb"], 2),
        "cpu_per_item_ratio": round((new["cpu_s"] / n) / (small_new["cpu_s"] / (n // 10)), 2),
        "kept": new["kept"],
        "candidates": new["candidates"],
        "run_wall_s": big["run"]["wall_s"],
    }
    if "reference" in big:
        old, small_old = big["reference"], small["reference"]
        result |= {
            "old_export_wall_s": old["wall_s"],
            "old_export_rss_mb": old["rss_mb"],
            "old_rss_ratio": round(old["rss_mb"] / small_old["rss_mb"], 2),
            "old_new_wall": round(old["wall_s"] / new["wall_s"], 2),
            "old_new_cpu": round(old["cpu_s"] / new["cpu_s"], 2),
            "old_new_rss": round(old["rss_mb"] / new["rss_mb"], 2),
            "same_output": bool(old["same_output"] and small_old["same_output"]),
        }
    return result


def main() -> None:
    """Run the benchmark, or one stage of it in this process."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 verdicts, not 1,000,000")
    parser.add_argument("--reference", type=Path, help="a checkout whose export to compare with")
    parser.add_argument("--stage", choices=["run", "export"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", default="", help=argparse.SUPPRESS)
    parser.add_argument("--run", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage == "run":
        print(json.dumps(measure(lambda: judge_suite(Path(args.folder)))))
        return
    if args.stage == "export":
        print(json.dumps(measure(lambda: _export(args.run, args.folder))))
        return
    n = 100_000 if args.quick else 1_000_000
    reference = args.reference.resolve() if args.reference else None
    with tempfile.TemporaryDirectory(prefix="export-scale-") as tmp:
        small = scale(n // 10, Path(tmp), reference)
        big = scale(n, Path(tmp), reference)
    print(json.dumps(summarise(n, big, small)))


if __name__ == "__main__":
    main()
