"""``harness distill``: train a student reward model on preference pairs and write a student artefact.

Inputs are preference exports (folders or JSONL, TRL standard or conversational) or suites with human labels.
One head is trained per principle (``--head``). A share of prompt groups is held out and never trained on;
the training card reports accuracy on it with a 95 % CI. With ``--weak-labels`` the student learns from a weak
judge's labels; adding ``--gold`` (the inputs' own labels are gold) also trains a student on the gold labels
and reports the performance gap recovered, PGR = (student on weak − weak judge) ÷ (student on gold − weak
judge), with a bootstrap CI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

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


def _log(args: argparse.Namespace) -> Any:
    return None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))


def _hacks(value: str) -> tuple[str, ...]:
    from harness.student.data import HACKS

    kinds = () if value == "none" else tuple(k.strip() for k in value.split(",") if k.strip())
    bad = [k for k in kinds if k not in HACKS]
    if bad:
        raise ConfigError(f"--hacks: unknown kind(s) {bad}; known: {', '.join(HACKS)}, none")
    return kinds


def _heads(pairs: list[Any], wanted: list[str]) -> list[str]:
    if wanted:
        return wanted
    found = sorted(
        {p.principle for p in pairs if p.principle} | {k for p in pairs for k in p.labels}
    )
    if not found:
        raise ConfigError("the pairs name no principle: say which head to train with --head NAME")
    return found


def _cap(pairs: list[Any], limit: int | None) -> list[Any]:
    if limit is None or len(pairs) <= limit:
        return pairs
    return sorted(pairs, key=lambda p: hashlib.sha256(f"cap:{p.id}".encode()).hexdigest())[:limit]


def build_jobs(args: argparse.Namespace) -> list[Any]:
    """One job per head: its training pairs (weak labels if given), held-out pairs, negatives and probes."""
    from harness.student.data import (
        hack_pairs,
        load_pairs,
        read_weak_labels,
        split,
        with_weak_labels,
    )
    from harness.student.jobs import HeadJob, relabel

    pairs = [p for path in args.inputs for p in load_pairs(path)]
    weak = read_weak_labels(args.weak_labels) if args.weak_labels else None
    kinds = _hacks(args.hacks)
    jobs = []
    for head in _heads(pairs, args.head):
        train, held = split(relabel(pairs, head), args.holdout, salt=f"distill:{args.seed}")
        train = _cap(train, args.max_pairs)
        if not train or not held:
            raise ConfigError(
                f"head {head!r}: {len(train)} training and {len(held)} held-out pairs; need both"
            )
        taught = with_weak_labels(train, weak) if weak is not None else train
        if not taught:
            raise ConfigError(f"--weak-labels: no id matches a training pair of head {head!r}")
        probes = [h for k in kinds for h in hack_pairs(held[:20], (k,))]
        jobs.append(
            HeadJob(
                head, taught, held, hack_pairs(train, kinds) if kinds else [], probes, gold=train
            )
        )
    return jobs


def cmd_distill(args: argparse.Namespace) -> int:
    """Train, evaluate and save a student."""
    from harness.student.features import FeatureExtractor, FeatureSpec

    if args.gold and not args.weak_labels:
        raise ConfigError("--gold needs --weak-labels (PGR compares a weak judge with gold labels)")
    jobs = build_jobs(args)
    extractor = FeatureExtractor.load(
        FeatureSpec(model=args.model), device=args.device, threads=args.threads
    )
    heads, metrics, hyper = _train_all(args, extractor, jobs)
    lora = _finetune(args, extractor, jobs, heads, metrics) if args.method == "lora" else None
    folder = _save(args, extractor, jobs, heads, metrics, hyper, lora)
    for name, m in metrics.items():
        print(
            f"{name}: held-out accuracy {_acc(m['heldout'])}"
            + (f"; PGR {_pgr(m['pgr'])}" if "pgr" in m else "")
        )
    print(f"student: {folder}")
    return 0


def _acc(m: dict[str, Any]) -> str:
    return f"{m['accuracy']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}] (n={m['n']})"


def _pgr(m: dict[str, Any]) -> str:
    return f"{m['pgr']:.2f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}]"


def _train_all(
    args: argparse.Namespace, extractor: Any, jobs: list[Any]
) -> tuple[dict[str, Any], ...]:
    """Fit each head (and the weak-to-strong comparison with --gold); returns heads, metrics, hyperparameters."""
    from harness.student.data import read_weak_labels
    from harness.student.jobs import run_job, weak_to_strong
    from harness.student.train import TrainConfig

    blocks = [("mean", extractor.spec.layers[-1])] if args.method == "lora" else None
    config = TrainConfig(
        l2=args.l2, blocks=blocks, aux_confidence=args.aux_confidence if args.weak_labels else 0.0
    )
    heads: dict[str, Any] = {}
    metrics: dict[str, dict[str, Any]] = {}
    hyper: dict[str, Any] = {}
    for job in jobs:
        heads[job.name], report = run_job(extractor, job, config, _log(args))
        metrics[job.name] = {k: report[k] for k in ("heldout", "hacks") if k in report}
        cv = report["cv_best"]
        hyper[job.name] = {
            **report["selection"],
            "cv_logloss": cv.get("logloss"),
            "cv_accuracy": cv.get("accuracy"),
            "aux_confidence": config.aux_confidence,
            **job.counts(),
        }
        if args.gold:
            weak = read_weak_labels(args.weak_labels)
            metrics[job.name]["pgr"] = weak_to_strong(extractor, job, weak, config, _log(args))
    return heads, metrics, hyper


def _finetune(
    args: argparse.Namespace,
    extractor: Any,
    jobs: list[Any],
    heads: dict[str, Any],
    metrics: dict[str, Any],
) -> Any:
    """LoRA Bradley–Terry fine-tune of all heads together, then re-measure on the held-out pairs."""
    from harness.student.jobs import evaluate_head, head_data
    from harness.student.features import MemoryCache
    from harness.student.lora import LoraConfig
    from harness.student.train import FinetunePair, finetune_bt

    pairs = [
        FinetunePair(
            extractor.encode(p.prompt, p.chosen),
            extractor.encode(p.prompt, p.rejected),
            p.label,
            job.name,
        )
        for job in jobs
        for p in [*job.train, *job.negatives]
    ]
    cfg = LoraConfig(epochs=args.epochs, max_steps=args.max_steps, seed=args.seed)
    state = finetune_bt(extractor, pairs, heads, cfg, _log(args))
    extractor.namespace += (
        "-lora-" + hashlib.sha256(b"".join(v.tobytes() for v in state.values())).hexdigest()[:12]
    )
    extractor.cache = MemoryCache()
    for job in jobs:
        data = head_data(extractor, [p for p in job.train if not p.kind.startswith("hack")])
        heads[job.name].calibrate(_rewards(heads[job.name], data), extractor.spec.response_tokens)
        metrics[job.name].update(evaluate_head(extractor, heads[job.name], job.heldout, job.probes))
    return cfg, state


def _rewards(head: Any, data: Any) -> Any:
    import numpy as np

    return np.concatenate(
        [head.reward(data.chosen, data.layers), head.reward(data.rejected, data.layers)]
    )


def _save(
    args: argparse.Namespace,
    extractor: Any,
    jobs: list[Any],
    heads: dict[str, Any],
    metrics: dict[str, Any],
    hyper: dict[str, Any],
    lora: Any,
) -> Path:
    from harness.student.artefact import StudentConfig, head_record, save_student, to_json

    cfg, state = lora if lora is not None else (None, None)
    training = {
        "summary": f"Trained by `harness distill` on {', '.join(str(i) for i in args.inputs)}.",
        "command": "harness " + " ".join(sys.argv[1:])
        if sys.argv[1:2] == ["distill"]
        else "harness distill …",
        "data": [{"input": str(i), "sha256": _sha(i)} for i in args.inputs],
        "label_source": (
            f"weak judge labels from {args.weak_labels}; held-out metrics against the inputs' labels"
            if args.weak_labels
            else "the inputs' own chosen/rejected labels (soft_label / label_<principle> if present)"
        ),
        "heldout": f"{args.holdout:.0%} of prompt groups (salted hash, seed {args.seed}); never trained on",
        "hacks": args.hacks,
        "hyperparameters": [{"head": h, **v} for h, v in hyper.items()],
    }
    config = StudentConfig(
        id=args.id or args.output.name,
        version=args.version,
        kind=args.method,
        features=extractor.spec,
        base_model_id=extractor.model_id,
        heads=[head_record(heads[j.name], hyper[j.name]["l2"]) for j in jobs],
        lora=cfg,
        training=to_json(training),
        metrics=to_json(metrics),
    )
    return save_student(args.output, config, heads, state)


def _sha(path: Path) -> str:
    if path.is_dir():
        return "folder"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dump(obj: Any) -> str:
    """JSON for logs."""
    return json.dumps(obj, default=str)
