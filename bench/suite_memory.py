"""Suite memory: peak RSS of ``harness run`` (rules judge) as the suite grows tenfold.

    python bench/suite_memory.py            # 12,500 and 125,000 cases (100,000 and 1,000,000 items)
    python bench/suite_memory.py --quick    # 1,250 and 12,500 cases
    python bench/suite_memory.py --principle coherence   # one principle: a quarter of the items

Each run is its own process, so its peak RSS is its own; the small run is the reference, and
``rss_ratio`` (big / small) is 1.0 when memory stays flat in the number of cases. ``--principle``
judges one principle only: the whole suite is still read, validated and written to the run folder,
in a quarter of the time. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from make_scale_suite import judge_suite, measure, write_suite  # noqa: E402


def _run(folder: Path, principles: list[str]) -> dict[str, object]:
    """One run in this process: wall and CPU time, peak RSS and what it judged."""
    return measure(lambda: judge_suite(folder, principles=principles))


def measure_size(n_cases: int, root: Path, principles: list[str]) -> dict[str, Any]:
    """Write a suite of ``n_cases`` and run it in a fresh interpreter."""
    folder = root / f"c{n_cases}"
    write_suite(folder, n_cases)
    cmd = [sys.executable, __file__, "--stage", str(folder)]
    cmd += [f"--principle={p}" for p in principles]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return {"cases": n_cases, **json.loads(out.stdout.strip().splitlines()[-1])}


def main() -> None:
    """Both sizes, then the JSON line (or, with ``--stage``, one run in this process)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,250 and 12,500 cases")
    parser.add_argument("--principle", action="append", default=[], help="judge only these")
    parser.add_argument("--stage", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(_run(Path(args.stage), args.principle)))
        return
    big = 12_500 if args.quick else 125_000
    with tempfile.TemporaryDirectory(prefix="suite-memory-") as tmp:
        small_fig = measure_size(big // 10, Path(tmp), args.principle)
        print(small_fig, flush=True)
        big_fig = measure_size(big, Path(tmp), args.principle)
        print(big_fig, flush=True)
    ratio = round(big_fig["rss_mb"] / small_fig["rss_mb"], 2)
    print(json.dumps({"small": small_fig, "big": big_fig, "rss_ratio": ratio}))


if __name__ == "__main__":
    main()
