"""``harness distill``: train a student reward model on preference pairs and write a student
artefact.

Inputs are preference exports (folders or JSONL, TRL standard or conversational) or suites with
human labels. One head is trained per principle (``--head``). A share of prompt groups is held out
and never trained on; the training card reports accuracy on it with a 95 % CI. With
``--weak-labels`` the student learns from a weak judge's labels; adding ``--gold`` (the inputs' own
labels are gold) also trains a student on the gold labels and reports the performance gap recovered,
PGR = (student on weak − weak judge) ÷ (student on gold − weak judge), with a bootstrap CI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import ConfigError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``harness distill`` to the CLI's subcommands."""
    p = sub.add_parser(
        "distill",
        help="train a student reward model (judge) on preference pairs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs", nargs="+", type=Path, help="preference export folders or JSONL files, or suites"
    )
    p.add_argument("--output", "-o", type=Path, required=True, help="student folder to write")
    p.add_argument(
        "--head",
        action="append",
        default=[],
        help="train a head for this principle (repeatable; default: one per principle in the data)",
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        help="share of prompts held out for evaluation (default 0.2)",
    )
    p.add_argument(
        "--holdout-tag",
        metavar="TAG",
        help="also hold out every case of an input suite tagged TAG (e.g. split-heldout; with "
        "--holdout 0 exactly those cases are held out)",
    )
    p.add_argument(
        "--weak-labels", type=Path, help="JSONL of id, p_chosen from a weak judge: train on these"
    )
    p.add_argument(
        "--gold", action="store_true", help="the inputs' labels are gold: report PGR against them"
    )
    p.add_argument(
        "--aux-confidence",
        type=float,
        default=0.0,
        metavar="ALPHA",
        help="auxiliary-confidence loss weight (Burns et al.) when training on weak labels; e.g. 0.5",
    )
    p.add_argument(
        "--hacks",
        type=_hacks,
        default="pad,repeat,colon,step,empty",
        help="reward-hacking negatives added to training: comma list of pad, repeat, colon, step, empty, "
        "refusal, or 'none'",
    )
    p.add_argument(
        "--method",
        choices=["linear", "lora"],
        default="linear",
        help="linear: head over frozen features (CPU); lora: Bradley–Terry LoRA fine-tune (GPU advised)",
    )
    p.add_argument("--l2", type=float, help="L2 penalty (default: chosen by cross-validation)")
    p.add_argument("--max-pairs", type=int, help="at most this many training pairs per head")
    p.add_argument(
        "--model",
        default="embedded:smollm2",
        help="base model (as the transformers backend names it)",
    )
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.add_argument(
        "--threads", type=int, help="CPU threads for torch (1 is often fastest on a busy machine)"
    )
    p.add_argument("--epochs", type=int, default=1, help="LoRA: passes over the training pairs")
    p.add_argument("--max-steps", type=int, help="LoRA: stop after this many optimiser steps")
    p.add_argument("--id", default=None, help="student name (default: the output folder name)")
    p.add_argument("--version", default="1", help="student version recorded in the artefact")
    p.add_argument("--seed", type=int, default=0, help="salt of the held-out split")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_distill)


def _hacks(value: str) -> tuple[str, ...]:
    """``--hacks``: a comma list of known kinds, or ``none``."""
    from harness.student.data import HACKS

    kinds = () if value == "none" else tuple(k.strip() for k in value.split(",") if k.strip())
    bad = [k for k in kinds if k not in HACKS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown kind(s) {bad}; known: {', '.join(HACKS)}, none")
    return kinds


def cmd_distill(args: argparse.Namespace) -> int:
    """Train, evaluate and save a student; print held-out accuracy (and PGR) per head."""
    from harness.student.data import read_weak_labels
    from harness.student.distill import (
        DistillOptions,
        PairFiles,
        distill,
        files_record,
        jobs_from_files,
        metrics_lines,
    )
    from harness.student.train import LoraConfig

    if args.gold and not args.weak_labels:
        raise ConfigError("--gold needs --weak-labels (PGR compares a weak judge with gold labels)")
    source = PairFiles(
        inputs=tuple(args.inputs),
        heads=tuple(args.head),
        holdout=args.holdout,
        weak_labels=args.weak_labels,
        hacks=args.hacks,
        max_pairs=args.max_pairs,
        seed=args.seed,
        holdout_tag=args.holdout_tag,
    )
    command = "harness " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["distill"] else ""
    result = distill(
        DistillOptions(
            jobs=jobs_from_files(source),
            output=args.output,
            training=files_record(source, command or "harness distill …"),
            student_id=args.id,
            version=args.version,
            method=args.method,
            model=args.model,
            device=args.device,
            threads=args.threads,
            l2=args.l2,
            aux_confidence=args.aux_confidence if args.weak_labels else 0.0,
            weak=read_weak_labels(args.weak_labels) if args.gold else None,
            lora=LoraConfig(epochs=args.epochs, max_steps=args.max_steps, seed=args.seed),
        ),
        log=None if args.quiet else _log,
    )
    print("\n".join(metrics_lines(result.metrics)))
    print(f"student: {result.folder}")
    return 0


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
