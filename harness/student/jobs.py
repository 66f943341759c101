"""Distillation jobs: turn preference pairs into a student head, and measure it on held-out pairs.

Shared by ``harness distill``, ``scripts/train_embedded_student.py`` and ``bench/student_eval.py``,
so the shipped numbers and the command's numbers come from one code path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.ratings import rating_agreement
from harness.records import Case
from harness.student.data import Pair
from harness.student.evaluate import correctness, hack_rates, pair_accuracy, pgr
from harness.student.features import FeatureExtractor
from harness.student.train import HeadData, LinearHead, TrainConfig, train_head

Log = Callable[[str], None]


@dataclass
class HeadJob:
    """What one head learns from and is measured on."""

    name: str
    train: list[Pair]  # labelled pairs (``label`` = P(chosen better) is the training target)
    heldout: list[Pair]  # pairs never trained on, with the labels taken as truth
    negatives: list[Pair] = field(
        default_factory=list
    )  # reward-hacking negatives added to training
    probes: list[Pair] = field(default_factory=list)  # reward-hacking probes on held-out prompts
    gold: list[Pair] = field(
        default_factory=list
    )  # the training pairs with gold labels (weak-to-strong)
    rated: list[Case] = field(default_factory=list)  # held-out cases with human ratings

    def counts(self) -> dict[str, int]:
        """Pair counts for the training card."""
        kinds = [p.kind for p in self.train]
        return {
            "train_pairs": kinds.count("human") + kinds.count("weak"),
            "extra_pairs": kinds.count("extra"),
            "hack_negatives": len(self.negatives),
            "heldout_pairs": len(self.heldout),
        }


def relabel(pairs: Sequence[Pair], head: str) -> list[Pair]:
    """The pairs that carry a label for ``head``, with that label as their ``label``."""
    out = []
    for p in pairs:
        label = p.label_for(head)
        if label is not None:
            out.append(replace(p, label=label, principle=head))
    return out


def pair_features(
    extractor: FeatureExtractor, pairs: Sequence[Pair]
) -> tuple[np.ndarray, np.ndarray]:
    """Feature arrays of the chosen and of the rejected responses."""
    n = len(pairs)
    feats = extractor.extract(
        [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    )
    return feats[:n], feats[n:]


def head_data(extractor: FeatureExtractor, pairs: Sequence[Pair]) -> HeadData:
    """Training arrays of pairs (targets from ``label``; hack negatives marked as not genuine)."""
    fc, fr = pair_features(extractor, pairs)
    return HeadData(
        fc,
        fr,
        np.array([p.label for p in pairs], dtype=float),
        extractor.spec.layers,
        [p.group for p in pairs],
        np.array([not p.kind.startswith("hack") for p in pairs]),
        window=extractor.spec.response_tokens,
    )


def pair_rewards(
    extractor: FeatureExtractor, head: LinearHead, pairs: Sequence[Pair]
) -> tuple[np.ndarray, ...]:
    """Rewards of the chosen and of the rejected responses, unseen-tail penalty included (as the
    backend does).
    """
    fc, fr = pair_features(extractor, pairs)
    layers = extractor.spec.layers
    uc = extractor.unseen([(p.prompt, p.chosen) for p in pairs])
    ur = extractor.unseen([(p.prompt, p.rejected) for p in pairs])
    return head.reward(fc, layers, uc), head.reward(fr, layers, ur)


def margins(extractor: FeatureExtractor, head: LinearHead, pairs: Sequence[Pair]) -> np.ndarray:
    """Reward of the truly better response minus the other's (labels below 0.5 flip the pair)."""
    rc, rr = pair_rewards(extractor, head, pairs)
    sign = np.array([1.0 if p.label > 0.5 else -1.0 if p.label < 0.5 else 0.0 for p in pairs])
    return sign * (rc - rr)


def evaluate_head(
    extractor: FeatureExtractor,
    head: LinearHead,
    heldout: Sequence[Pair],
    probes: Sequence[Pair] = (),
) -> dict[str, Any]:
    """Held-out accuracy with a CI (tied labels skipped), and how often genuine answers beat each
    hack.
    """
    decided = [p for p in heldout if p.label != 0.5]
    m = margins(extractor, head, decided)
    out: dict[str, Any] = {"heldout": pair_accuracy(m, np.zeros_like(m))}
    if probes:
        pm = margins(extractor, head, probes)
        out["hacks"] = hack_rates(
            pm, np.zeros_like(pm), [p.kind.removeprefix("hack:") for p in probes]
        )
    return out


def rated_rewards(
    extractor: FeatureExtractor, head: LinearHead, cases: Sequence[Case], principle: str
) -> pd.DataFrame:
    """Reward of every reply rated on ``principle``, next to its mean human rating (a row each)."""
    rated = [(c, r) for c in cases for r in c.candidates if principle in r.human_scores]
    items = [(tuple(c.messages()), r.response) for c, r in rated]
    rewards = head.reward(extractor.extract(items), extractor.spec.layers, extractor.unseen(items))
    return pd.DataFrame(
        {
            "case_id": [c.id for c, _ in rated],
            "generator": [r.generator for _, r in rated],
            "score": rewards,
            "human": [r.human_scores[principle] for _, r in rated],
        }
    )


def rating_metrics(
    extractor: FeatureExtractor, head: LinearHead, cases: Sequence[Case], principle: str
) -> dict[str, Any]:
    """Pairwise accuracy, Spearman and Kendall of the head's rewards against human ratings."""
    return rating_agreement(rated_rewards(extractor, head, cases, principle))


def run_job(
    extractor: FeatureExtractor, job: HeadJob, config: TrainConfig, log: Log | None = None
) -> tuple[LinearHead, dict[str, Any]]:
    """Train a head on the job's pairs plus negatives, then measure it on the held-out pairs and
    probes.
    """
    head, report = train_head(
        job.name, head_data(extractor, [*job.train, *job.negatives]), config, log
    )
    metrics = evaluate_head(extractor, head, job.heldout, job.probes)
    return head, {**metrics, "selection": report["chosen"], "cv_best": _best_cv(report)}


def _best_cv(report: dict[str, Any]) -> dict[str, float]:
    chosen = report["chosen"]
    for row in report["cv"]:
        if row["blocks"] == chosen["blocks"] and row["l2"] == chosen["l2"]:
            return {"logloss": row["logloss"], "accuracy": row["accuracy"]}
    return {}


def weak_to_strong(
    extractor: FeatureExtractor,
    job: HeadJob,
    weak: dict[str, float],
    config: TrainConfig,
    log: Log | None = None,
) -> dict[str, Any]:
    """PGR of a student trained on weak labels, against one trained on the gold labels of the same
    pairs.

    ``weak`` maps pair ids to the weak judge's P(chosen better); it must cover the training and
    held-out pairs. The gold labels are ``job.gold`` (else ``job.train``) and the held-out labels.
    Both students use the same training pairs and no reward-hacking negatives (those are labelled
    for free, and would flatter the weak student); only the weak student uses the
    auxiliary-confidence loss.
    """
    heldout = [p for p in job.heldout if p.id in weak and p.label != 0.5]
    train = [p for p in (job.gold or job.train) if p.id in weak]
    if not heldout or not train:
        raise ValueError("the weak labels cover none of the training or held-out pairs")
    gold_cfg = replace(config, aux_confidence=0.0)
    gold, _ = train_head(job.name, head_data(extractor, train), gold_cfg, log)
    weak_train = [replace(p, label=weak[p.id], kind="weak") for p in train]
    student, _ = train_head(job.name, head_data(extractor, weak_train), config, log)
    sign = np.array([1.0 if p.label > 0.5 else -1.0 for p in heldout])
    weak_credit = correctness(sign * (np.array([weak[p.id] for p in heldout]) - 0.5))
    result = pgr(
        weak_credit,
        correctness(margins(extractor, student, heldout)),
        correctness(margins(extractor, gold, heldout)),
    )
    train_sign = np.array([1.0 if p.label > 0.5 else -1.0 if p.label < 0.5 else 0.0 for p in train])
    weak_train_agree = float(
        np.mean(correctness(train_sign * (np.array([weak[p.id] for p in train]) - 0.5)))
    )
    return {
        **result,
        "train_pairs": len(train),
        "weak_train_accuracy": weak_train_agree,
        "aux_confidence": config.aux_confidence,
    }
