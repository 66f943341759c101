"""Calibrate the embedded student's reward-to-rubric mapping on held-out human-labelled pairs.

    .venv/bin/python scripts/calibrate_embedded_student.py --max-pairs 40
    .venv/bin/python scripts/calibrate_embedded_student.py --data DIR --student DIR

It writes ``calibration.json`` into the student folder (``students/embedded`` by default).

The pairs are the student's held-out rows (never trained on) that are in none of the repo's
suites, so the suites used by ``harness audit`` stay out of sample. Per head, Platt scaling turns
rewards into P(the answer is the one people preferred) (see harness/student/calibrate.py). The last
line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np

from harness.backends.base import Subject
from harness.backends.reward_model import RewardModelBackend
from harness.student.artefact import resolve_student
from harness.student.calibrate import CALIBRATION, calibrate_head
from harness.student.data import text_id
from harness.student.features import default_cache
from harness.student.public_data import default_data_dir, load_all, suite_case_ids

COMMAND = "python scripts/calibrate_embedded_student.py"


def rewards(backend: RewardModelBackend, pairs: list, head: str) -> tuple[np.ndarray, np.ndarray]:
    """Rewards of the chosen and rejected answers of each pair, with the head's principle."""
    subjects = [
        Subject(principle=head, prompt=list(p.prompt), response=p.chosen, response_b=p.rejected)
        for p in pairs
    ]
    both = np.array(backend.rewards(subjects))
    return both[:, 0], both[:, 1]


def main(argv: list[str] | None = None) -> int:
    """Calibrate every head and write ``calibration.json``; print a JSON summary last."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="shared data folder")
    parser.add_argument("--student", default="embedded", help="student folder or 'embedded'")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--max-pairs",
        type=int,
        default=None,
        help="at most this many pairs per head (seeded order)",
    )
    args = parser.parse_args(argv)
    folder = resolve_student(args.student)
    (folder / CALIBRATION).unlink(missing_ok=True)  # rewards do not depend on it; start clean
    backend = RewardModelBackend(
        RewardModelBackend.Options(student=args.student, device="cpu", threads=args.threads)
    )
    extractor = backend.extractor()
    extractor.cache = default_cache(extractor.namespace)  # on disk: a rerun computes nothing twice
    suite_ids = suite_case_ids()
    heads = {}
    for name, ds in load_all(args.data or default_data_dir()).items():
        head = ds.source.head
        pairs = sorted(
            (p for p in ds.heldout if p.id not in suite_ids), key=lambda p: text_id(p.id)
        )
        pairs = pairs[: args.max_pairs]
        chosen, rejected = rewards(backend, pairs, head)
        rec = backend.student.heads[head]
        heads[head] = {
            "dataset": name,
            **calibrate_head(chosen, rejected, (rec.center, rec.spread)),
        }
        print(
            f"{head}: {json.dumps({k: heads[head][k] for k in ('n_pairs', 'after')})}",
            file=sys.stderr,
        )
    record = {
        "method": "Platt scaling of rewards: P(answer is the human-preferred one)",
        "data": "held-out public pairs outside the repo's suites (harness/student/public_data.py)",
        "command": COMMAND,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "heads": heads,
    }
    (folder / CALIBRATION).write_text(json.dumps(record, indent=1), encoding="utf-8")
    summary = {
        h: {"n": r["n_pairs"], "before": r["before"], "after": r["after"]} for h, r in heads.items()
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
