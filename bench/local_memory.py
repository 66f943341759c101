"""Memory of a run with a local model judge, above the model's own memory.

    python bench/local_memory.py            # runs of 400 and 2,000 items with the smollm2 judge
    python bench/local_memory.py --quick    # runs of 100 and 500 items

Issue 11 asks that a run with a local model judge peak at most 300 MB above the model's own memory.
Each figure comes from a fresh interpreter, so its peak RSS is its own:

- the reference, ``model``: the harness imported, the ``smollm2`` judge (SmolLM2-135M, run by the
  ``transformers`` backend) loaded, and one full batch of the same suite's requests judged, so the
  weights, the batch's activations and the interpreter are all counted;
- ``harness run`` on the suite (real HH-RLHF text, ``bench/make_scale_suite.py``) with that judge,
  at two sizes, five times apart. ``above_model_mb`` is the run's peak minus the reference, and
  ``growth_mb`` how much more the larger run needed: flat memory keeps it near zero.

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from make_scale_suite import judge_suite, measure, write_suite  # noqa: E402

JUDGE = "smollm2"


def _model(folder: Path) -> dict[str, object]:
    """Load the judge and judge one full batch: the model's own memory, harness included."""
    import asyncio

    from harness.engine.plan import plan
    from harness.engine.runner import RunOptions, bind_judges, load_inputs

    inputs = load_inputs(RunOptions(suite=folder / "scale.yaml", judges=[JUDGE]))
    bound = bind_judges(inputs.judges)
    backend = bound[0].backend
    items = plan(inputs.suite.cases[:8], inputs.constitution, bound)
    batch = [i.request for i in items[: max(1, backend.batch_size)]]
    answers = asyncio.run(backend.complete(batch))
    return {"batch": len(answers)}


def _run(folder: Path) -> dict[str, object]:
    return judge_suite(folder, (JUDGE,))


STAGES = {"model": _model, "run": _run}


def stage(name: str, folder: Path) -> dict[str, float]:
    """One stage in a fresh interpreter; its wall time and peak RSS come back."""
    cmd = [sys.executable, __file__, "--stage", name, "--folder", str(folder)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cases_for(items: int) -> int:
    """Cases of the scale suite that make about ``items`` items for the judge."""
    from harness.config import load_constitution

    constitution, _ = load_constitution("default")
    return max(1, items // (2 * len(constitution.principles)))


def main() -> None:
    """Measure the reference and both runs, then print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 and 500 items")
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--folder", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(measure(lambda: STAGES[args.stage](Path(args.folder)))))
        return
    big = 500 if args.quick else 2000
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="local-memory-") as tmp:
        for name, items in (("small", big // 5), ("big", big)):
            folder = Path(tmp) / name
            write_suite(folder, cases_for(items))
            if name == "small":
                figures["model"] = stage("model", folder)
            figures[name] = stage("run", folder)
            print(f"{name:6s} {figures[name]}", flush=True)
    print(f"model  {figures['model']}")
    model = figures["model"]["rss_mb"]
    print(json.dumps({
        "judge": JUDGE,
        "model_rss_mb": model,
        "items_small": figures["small"]["verdicts"],
        "items_big": figures["big"]["verdicts"],
        "above_model_mb_small": round(figures["small"]["rss_mb"] - model, 1),
        "above_model_mb": round(figures["big"]["rss_mb"] - model, 1),
        "growth_mb": round(figures["big"]["rss_mb"] - figures["small"]["rss_mb"], 1),
        "judgments_per_s": round(figures["big"]["verdicts"] / figures["big"]["wall_s"], 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
