"""Distillation: train a student reward model on preference pairs and write the student artefact.

:func:`distill` is the one train-and-save path: ``harness distill`` (pairs from files, through
:func:`jobs_from_files`) and ``scripts/train_embedded_student.py`` (pairs from the public data) both
call it. One head is trained per job; each job's held-out pairs are never trained on, and the
training card reports accuracy on them with a 95 % CI. With weak labels, the performance gap
recovered (PGR) is measured against a student trained on the gold labels of the same pairs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from harness.errors import ConfigError
from harness.records import Case
from harness.student.artefact import StudentConfig, head_record, save_student, to_json
from harness.student.data import (
    DEFAULT_HACKS,
    Pair,
    hack_pairs,
    load_pairs,
    read_weak_labels,
    split,
    tagged_groups,
    with_weak_labels,
)
from harness.student.features import FeatureExtractor, FeatureSpec, MemoryCache
from harness.student.jobs import (
    HeadJob,
    evaluate_head,
    head_data,
    rating_metrics,
    relabel,
    run_job,
    weak_to_strong,
)
from harness.student.train import FinetunePair, LinearHead, LoraConfig, TrainConfig, finetune_bt

Log = Callable[[str], None]
#: Metrics of one head: held-out accuracy, hack rates, PGR (JSON-ready after :func:`to_json`).
Metrics = dict[str, dict[str, object]]
#: Held-out pairs per head whose hacked versions probe the student for reward hacking.
PROBE_PAIRS = 20


@dataclass(frozen=True)
class PairFiles:
    """Where ``harness distill`` takes its pairs from, and how it splits them."""

    inputs: tuple[Path, ...]
    heads: tuple[str, ...] = ()  # default: one per principle the pairs name
    holdout: float = 0.2
    weak_labels: Path | None = None  # JSONL of id, p_chosen: train on these instead
    hacks: tuple[str, ...] = DEFAULT_HACKS
    max_pairs: int | None = None
    seed: int = 0
    holdout_tag: str | None = None  # also hold out every suite case with this tag


@dataclass(frozen=True)
class DistillOptions:
    """What to train on, how, and where the student goes."""

    jobs: tuple[HeadJob, ...]
    output: Path
    training: Mapping[str, object]  # the card's record of data, labels and splits
    student_id: str | None = None  # default: the output folder's name
    version: str = "1"
    method: Literal["linear", "lora"] = "linear"
    model: str = "embedded:smollm2"
    device: Literal["cpu", "cuda", "auto"] = "auto"
    threads: int | None = None
    l2: float | None = None  # default: chosen by cross-validation
    aux_confidence: float = 0.0
    weak: Mapping[str, float] | None = None  # weak labels: measure PGR against the gold labels
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class Distilled:
    """A written student: its folder and its held-out metrics per head."""

    folder: Path
    metrics: Metrics


def distill(options: DistillOptions, log: Log | None = None) -> Distilled:
    """Train every job's head (then the LoRA fine-tune if asked), measure, and save the student."""
    extractor = FeatureExtractor.load(
        FeatureSpec(model=options.model), device=options.device, threads=options.threads
    )
    config = TrainConfig(
        l2=options.l2,
        # the fine-tune adapts the last layer, so its heads read that layer's mean only
        blocks=[("mean", extractor.spec.layers[-1])] if options.method == "lora" else None,
        aux_confidence=options.aux_confidence,
    )
    heads: dict[str, LinearHead] = {}
    metrics: Metrics = {}
    hyper: dict[str, dict[str, object]] = {}
    for job in options.jobs:
        heads[job.name], metrics[job.name], hyper[job.name] = _train_one(
            extractor, job, config, options.weak, log
        )
    state = None
    if options.method == "lora":
        state = _finetune(extractor, options, heads, metrics, log)
    folder = _save(options, extractor, heads, metrics, hyper, state)
    return Distilled(folder, to_json(metrics))


def _train_one(
    extractor: FeatureExtractor,
    job: HeadJob,
    config: TrainConfig,
    weak: Mapping[str, float] | None,
    log: Log | None,
) -> tuple[LinearHead, dict[str, object], dict[str, object]]:
    """One head, its metrics (PGR too with weak labels) and the hyperparameters the card lists."""
    head, report = run_job(extractor, job, config, log)
    metrics: dict[str, object] = {k: report[k] for k in ("heldout", "hacks") if k in report}
    if job.rated:
        metrics["ratings"] = rating_metrics(extractor, head, job.rated, job.name)
    if weak is not None:
        metrics["pgr"] = weak_to_strong(extractor, job, dict(weak), config, log)
    cv = report["cv_best"]
    hyper = {
        **report["selection"],
        "cv_logloss": cv.get("logloss"),
        "cv_accuracy": cv.get("accuracy"),
        "folds": config.folds,
        "grouped_by": "prompt",
        "aux_confidence": config.aux_confidence,
        **job.counts(),
    }
    if log:
        log(f"{job.name}: held-out {to_json(metrics['heldout'])}")
    return head, metrics, hyper


def _finetune(
    extractor: FeatureExtractor,
    options: DistillOptions,
    heads: dict[str, LinearHead],
    metrics: Metrics,
    log: Log | None,
) -> dict[str, np.ndarray]:
    """LoRA Bradley–Terry fine-tune of all heads together, then re-measure on the held-out pairs."""
    pairs = [
        FinetunePair(
            extractor.encode(p.prompt, p.chosen),
            extractor.encode(p.prompt, p.rejected),
            p.label,
            job.name,
        )
        for job in options.jobs
        for p in [*job.train, *job.negatives]
    ]
    state = finetune_bt(extractor, pairs, heads, options.lora, log)
    # features of the adapted model must never be read from the frozen model's cache
    digest = hashlib.sha256(b"".join(v.tobytes() for v in state.values())).hexdigest()[:12]
    extractor.namespace += "-lora-" + digest
    extractor.cache = MemoryCache()
    for job in options.jobs:
        head = heads[job.name]
        data = head_data(extractor, [p for p in job.train if not p.kind.startswith("hack")])
        rewards = np.concatenate(
            [head.reward(data.chosen, data.layers), head.reward(data.rejected, data.layers)]
        )
        head.calibrate(rewards, extractor.spec.response_tokens)
        metrics[job.name].update(evaluate_head(extractor, head, job.heldout, job.probes))
    return state


def _save(
    options: DistillOptions,
    extractor: FeatureExtractor,
    heads: dict[str, LinearHead],
    metrics: Metrics,
    hyper: dict[str, dict[str, object]],
    state: dict[str, np.ndarray] | None,
) -> Path:
    """Write the student folder (config, weights, training card)."""
    training = {
        **options.training,
        "hyperparameters": [{"head": h, **v} for h, v in hyper.items()],
    }
    config = StudentConfig(
        id=options.student_id or options.output.name,
        version=options.version,
        kind=options.method,
        features=extractor.spec,
        base_model_id=extractor.model_id,
        heads=[head_record(heads[j.name], _number(hyper[j.name]["l2"])) for j in options.jobs],
        lora=options.lora if state is not None else None,
        training=to_json(training),
        metrics=to_json(metrics),
    )
    return save_student(options.output, config, heads, state)


# --------------------------------------------------------------------------- pairs from files


def jobs_from_files(source: PairFiles) -> tuple[HeadJob, ...]:
    """One job per head: training pairs (weak labels if given), held-out pairs, negatives, probes."""
    pairs = [p for path in source.inputs for p in load_pairs(path)]
    weak = read_weak_labels(source.weak_labels) if source.weak_labels else None
    forced = _tagged(source)
    jobs = [_job(pairs, head, source, weak, forced) for head in _heads(pairs, source.heads)]
    rated = _rated_cases(source)
    for job in jobs:
        held = {p.group for p in job.heldout}
        job.rated = [c for c in rated if c.id in held]
    return tuple(jobs)


def _tagged(source: PairFiles) -> set[str]:
    """Groups (case ids) held out by ``holdout_tag``; a tag no case carries is an error."""
    if not source.holdout_tag:
        return set()
    forced = tagged_groups(source.inputs, source.holdout_tag)
    if not forced:
        raise ConfigError(
            f"--holdout-tag: no case of the input suites is tagged {source.holdout_tag!r}"
        )
    return forced


def _rated_cases(source: PairFiles) -> list[Case]:
    """The cases of the input suites whose candidates carry human ratings."""
    from harness.suite_stream import load_suite

    return [
        c
        for path in source.inputs
        if path.suffix in (".yaml", ".yml")
        for c in load_suite(path).cases
        if any(r.human_scores for r in c.candidates)
    ]


def _job(
    pairs: list[Pair],
    head: str,
    source: PairFiles,
    weak: dict[str, float] | None,
    forced: set[str],
) -> HeadJob:
    salt = f"distill:{source.seed}"
    train, held = split(relabel(pairs, head), source.holdout, salt=salt, always_held=forced)
    train = _cap(train, source.max_pairs)
    if not train or not held:
        raise ConfigError(
            f"head {head!r}: {len(train)} training and {len(held)} held-out pairs; need both"
        )
    taught = with_weak_labels(train, weak) if weak is not None else train
    if not taught:
        raise ConfigError(f"--weak-labels: no id matches a training pair of head {head!r}")
    kinds = source.hacks
    probes = [h for k in kinds for h in hack_pairs(held[:PROBE_PAIRS], (k,))]
    negatives = hack_pairs(train, kinds) if kinds else []
    return HeadJob(head, taught, held, negatives, probes, gold=train)


def _heads(pairs: Sequence[Pair], wanted: Sequence[str]) -> list[str]:
    if wanted:
        return list(wanted)
    found = sorted(
        {p.principle for p in pairs if p.principle} | {k for p in pairs for k in p.labels}
    )
    if not found:
        raise ConfigError("the pairs name no principle: say which head to train with --head NAME")
    return found


def _cap(pairs: list[Pair], limit: int | None) -> list[Pair]:
    """At most ``limit`` pairs, picked by a hash of their ids (the same ones on every run)."""
    if limit is None or len(pairs) <= limit:
        return pairs
    return sorted(pairs, key=lambda p: hashlib.sha256(f"cap:{p.id}".encode()).hexdigest())[:limit]


def files_record(source: PairFiles, command: str) -> dict[str, object]:
    """What the training card says about the data, labels and split of a ``harness distill`` run."""
    inputs = ", ".join(str(i) for i in source.inputs)
    own = (
        "the inputs' own labels: chosen/rejected (soft_label / label_<principle> if present), "
        "and, in suites, every two candidates of a case whose human ratings (human_scores) differ"
    )
    weak = (
        f"weak judge labels from {source.weak_labels}; held-out metrics against the inputs' labels"
    )
    return {
        "summary": f"Trained by `harness distill` on {inputs}.",
        "command": command,
        "data": [{"input": str(i), "sha256": _sha(i)} for i in source.inputs],
        "label_source": weak if source.weak_labels else own,
        "heldout": f"{source.holdout:.0%} of prompt groups (salted hash, seed {source.seed})"
        + (f" plus every case tagged {source.holdout_tag!r}" if source.holdout_tag else "")
        + "; never trained on",
        "hacks": ",".join(source.hacks) or "none",
    }


def _sha(path: Path) -> str:
    return "folder" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()


def metrics_lines(metrics: Metrics) -> list[str]:
    """One line per head: held-out accuracy with its CI, and PGR when measured."""
    lines = []
    for name, m in metrics.items():
        acc = _fields(m["heldout"])
        line = (
            f"{name}: held-out accuracy {acc['accuracy']:.3f} "
            f"[{acc['ci_low']:.3f}, {acc['ci_high']:.3f}] (n={acc['n']:.0f})"
        )
        if "pgr" in m:
            g = _fields(m["pgr"])
            line += f"; PGR {g['pgr']:.2f} [{g['ci_low']:.2f}, {g['ci_high']:.2f}]"
        lines.append(line)
        if "ratings" in m:
            r = _fields(m["ratings"])
            lines.append(
                f"{name}: held-out human ratings ({r['cases']:.0f} cases, {r['pairs']:.0f} pairs): "
                f"pairwise accuracy {_ci(r, 'pair_accuracy', 'pair')}, Spearman "
                f"{_ci(r, 'spearman')}, Kendall {_ci(r, 'kendall')} (95% CIs, bootstrap over cases)"
            )
    return lines


def _ci(m: dict[str, float], key: str, prefix: str | None = None) -> str:
    p = prefix or key
    return f"{m[key]:.3f} [{m[p + '_ci_low']:.3f}, {m[p + '_ci_high']:.3f}]"


def _number(value: object) -> float:
    assert isinstance(value, int | float)
    return float(value)


def _fields(value: object) -> dict[str, float]:
    assert isinstance(value, dict)
    return {k: float(v) for k, v in value.items() if isinstance(v, int | float)}
