"""Write a large suite for scale tests: N cases × 2 candidates, real HH-RLHF text, unique ids.

The texts come from the repository's bundled human-labelled cases (``suites/hh_pairs.cases.jsonl``),
cycled with a case number prepended so that every prompt, response and cache key is distinct.

    python bench/make_scale_suite.py OUT_DIR N_CASES
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "suites" / "hh_pairs.cases.jsonl"


def write_suite(folder: Path, n_cases: int) -> Path:
    """Write ``scale.yaml`` and ``scale.cases.jsonl`` into ``folder``; returns the suite path."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in SOURCE.read_text(encoding="utf-8").splitlines()]
    with (folder / "scale.cases.jsonl").open("w", encoding="utf-8") as out:
        for i in range(n_cases):
            src = rows[i % len(rows)]
            case = {
                "id": f"s{i:07d}",
                "prompt": f"[{i}] " + _last_user(src["prompt"]),
                "tags": src.get("tags", []),
                "candidates": [
                    {"generator": c["generator"], "response": f"({i}) {c['response']}"}
                    for c in src["candidates"][:2]
                ],
            }
            out.write(json.dumps(case, ensure_ascii=False) + "\n")
    suite = folder / "scale.yaml"
    suite.write_text(
        f"id: scale-{n_cases}\ncases_file: scale.cases.jsonl\njudges: [rules]\n", encoding="utf-8"
    )
    return suite


def measure(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work``; its wall and CPU seconds and this process's peak RSS, with what it returned."""
    wall, cpu = time.perf_counter(), time.process_time()
    extra = work()
    return {
        "wall_s": round(time.perf_counter() - wall, 3),
        "cpu_s": round(time.process_time() - cpu, 3),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **extra,
    }


def judge_suite(
    folder: Path, judges: tuple[str, ...] = ("rules",), **options: Any
) -> dict[str, Any]:
    """``harness run`` of the suite in ``folder`` (no cache, quiet): its run folder and verdicts."""
    from harness.engine.runner import RunOptions, run

    opts = RunOptions(
        suite=folder / "scale.yaml", judges=list(judges), out=folder / "out", use_cache=False,
        quiet=True, **options,
    )  # fmt: skip
    result = run(opts)
    return {"run_dir": str(result.run_dir), "verdicts": sum(result.counts.values())}


def _last_user(prompt: object) -> str:
    if isinstance(prompt, str):
        return prompt
    turns = [m["content"] for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    return turns[-1] if turns else ""


if __name__ == "__main__":
    print(write_suite(Path(sys.argv[1]), int(sys.argv[2])))
