"""Train student reward heads: Bradley–Terry over frozen features, and a LoRA Bradley–Terry
fine-tune.

The Bradley–Terry model: P(a is better than b) = sigmoid(r(a) - r(b)). A linear head has
``r(x) = w · (select(x) - mean) / scale`` over blocks of the frozen feature array (see
:mod:`harness.student.features`); it is fitted by L-BFGS on the soft-label cross-entropy of the
pairs plus
``l2/2 · |w|²``. The feature blocks and ``l2`` are chosen by grouped k-fold cross-validation on the
training pairs alone (log-loss on the genuine pairs), never on held-out data.

Auxiliary-confidence loss (Burns et al., 2023, weak-to-strong generalisation): the target becomes
``(1 - α) · weak label + α · 1[student prefers chosen]``, with α warmed up from 0 over a few refits,
so the student can overrule weak labels it confidently disagrees with.

A pointwise score on a 1..N rubric is ``1 + (N - 1) · sigmoid((r - center) / spread)``, with
``center`` the
median reward of the genuine training responses and ``spread`` chosen so their 5th..95th percentiles
map to 5 %..95 % of the scale.

Unseen tail: a head reads only the first ``response_tokens`` of a response, so padding or repeating
a long answer beyond that window would leave its reward unchanged (a tie with the genuine answer).
Each response token beyond the window therefore costs ``tail_penalty`` reward: ``TAIL_SHARE`` of the
calibration spread per window's worth of unseen tokens, small enough to change only near-ties.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import expit

from harness.student.features import POOLS, select

if TYPE_CHECKING:
    from harness.student.features import Encoded, FeatureExtractor

Block = tuple[str, int]
L2_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
LOGIT_95 = float(np.log(0.95 / 0.05))
TAIL_SHARE = 0.05


def block_choices(layers: Sequence[int]) -> list[list[Block]]:
    """Candidate feature blocks for cross-validation: single layers, mean+end pairs, all means,
    everything.
    """
    top, mid = layers[-1], layers[len(layers) // 2]
    choices: list[list[Block]] = [[("mean", layer)] for layer in layers]
    choices += [
        [("mean", mid), ("end", mid)],
        [("mean", top), ("end", top)],
        [("mean", layer) for layer in layers],
    ]
    choices.append([(pool, layer) for pool in POOLS for layer in layers])
    return choices


@dataclass
class LinearHead:
    """A linear reward head over frozen features, with its pointwise calibration."""

    name: str
    blocks: list[Block]
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    center: float = 0.0
    spread: float = 1.0
    tail_penalty: float = 0.0  # reward per response token beyond the feature window

    def reward(
        self, features: np.ndarray, layers: Sequence[int], unseen: np.ndarray | None = None
    ) -> np.ndarray:
        """Scalar rewards of feature arrays ``[n, 2, L, H]``, less the unseen-tail penalty when
        counts are given.
        """
        x = select(features, self.blocks, layers)
        r = np.asarray(((x - self.mean) / self.scale) @ self.weight, dtype=np.float64)
        return r if unseen is None else r - self.tail_penalty * np.asarray(unseen, dtype=np.float64)

    def calibrate(self, rewards: np.ndarray, window: int = 0) -> None:
        """Set the pointwise calibration from rewards of genuine responses (and the tail penalty,
        given the window).
        """
        q05, q50, q95 = np.quantile(rewards, [0.05, 0.5, 0.95])
        self.center = float(q50)
        self.spread = float(max((q95 - q05) / (2 * LOGIT_95), 1e-6))
        self.tail_penalty = TAIL_SHARE * self.spread / window if window else 0.0

    def score(self, rewards: np.ndarray | float, scale_max: int) -> np.ndarray:
        """Calibrated scores on the 1..scale_max rubric."""
        return 1 + (scale_max - 1) * expit((np.asarray(rewards) - self.center) / self.spread)


# --------------------------------------------------------------------------- fitting


def bt_objective(
    w: np.ndarray, diff: np.ndarray, target: np.ndarray, weight: np.ndarray, l2: float
) -> tuple[float, np.ndarray]:
    """Weighted soft-label Bradley–Terry cross-entropy with L2, and its gradient."""
    z = diff @ w
    total = weight.sum()
    loss = float((weight * (np.logaddexp(0, z) - target * z)).sum() / total + 0.5 * l2 * w @ w)
    grad = diff.T @ (weight * (expit(z) - target)) / total + l2 * w
    return loss, grad


def fit_bt(
    diff: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray,
    l2: float,
    *,
    aux: float = 0.0,
    rounds: int = 4,
    w0: np.ndarray | None = None,
) -> np.ndarray:
    """Weights of a Bradley–Terry head on standardized feature differences (chosen minus
    rejected).
    """
    w = np.zeros(diff.shape[1]) if w0 is None else w0
    w = _lbfgs(w, diff, target, weight, l2)
    for k in range(1, rounds + 1 if aux > 0 else 1):
        alpha = aux * k / rounds  # warm-up, as in Burns et al.
        hard = (diff @ w > 0).astype(float)
        w = _lbfgs(w, diff, (1 - alpha) * target + alpha * hard, weight, l2)
    return w


def _lbfgs(
    w0: np.ndarray, diff: np.ndarray, target: np.ndarray, weight: np.ndarray, l2: float
) -> np.ndarray:
    from scipy.optimize import minimize  # imported here: judging with a student never fits anything

    result = minimize(
        bt_objective,
        w0,
        args=(diff, target, weight, l2),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 500},
    )
    return np.asarray(result.x)


@dataclass
class HeadData:
    """Training pairs of one head as feature arrays, with labels, weights, groups and which are
    genuine.
    """

    chosen: np.ndarray  # [n, 2, L, H]
    rejected: np.ndarray
    target: np.ndarray  # P(chosen is better)
    layers: Sequence[int]
    groups: list[str]
    genuine: np.ndarray  # bool: a real pair (not a reward-hacking negative)
    weight: np.ndarray = field(default_factory=lambda: np.zeros(0))
    window: int = 0  # response tokens the features see (sets the unseen-tail penalty; 0: none)

    def __post_init__(self) -> None:
        if len(self.weight) == 0:
            self.weight = np.ones(len(self.target))

    def subset(self, mask: np.ndarray) -> HeadData:
        """The pairs where ``mask`` holds."""
        return HeadData(
            self.chosen[mask],
            self.rejected[mask],
            self.target[mask],
            self.layers,
            [g for g, m in zip(self.groups, mask, strict=True) if m],
            self.genuine[mask],
            self.weight[mask],
            self.window,
        )


@dataclass
class TrainConfig:
    """Hyperparameters of a linear head; ``None`` means chosen by cross-validation."""

    l2: float | None = None
    blocks: list[Block] | None = None
    folds: int = 5
    aux_confidence: float = 0.0
    l2_grid: tuple[float, ...] = L2_GRID


def fit_head(
    name: str, data: HeadData, blocks: list[Block], l2: float, aux: float = 0.0
) -> LinearHead:
    """A head fitted on all of ``data`` with given blocks and L2, calibrated on its genuine
    responses.
    """
    xc, xr = select(data.chosen, blocks, data.layers), select(data.rejected, blocks, data.layers)
    both = np.concatenate([xc, xr])
    mean, scale = both.mean(0), both.std(0) + 1e-6
    w = fit_bt((xc - xr) / scale, data.target, data.weight, l2, aux=aux)
    head = LinearHead(name, list(blocks), mean, scale, w)
    g = data.genuine
    rewards = [head.reward(data.chosen[g], data.layers), head.reward(data.rejected[g], data.layers)]
    head.calibrate(np.concatenate(rewards), data.window)
    return head


def fold_of(group: str, folds: int) -> int:
    """The cross-validation fold of a group (a stable hash)."""
    return int(hashlib.sha256(f"cv:{group}".encode()).hexdigest()[:8], 16) % folds


def cross_validate(
    data: HeadData, blocks: list[Block], l2: float, folds: int, aux: float = 0.0
) -> dict[str, float]:
    """Grouped k-fold log-loss and accuracy on the genuine pairs of held-out folds."""
    fold = np.array([fold_of(g, folds) for g in data.groups])
    z_all, t_all = [], []
    for k in range(folds):
        val = (fold == k) & data.genuine
        if not val.any() or (fold != k).sum() < 2:
            continue
        head = fit_head("cv", data.subset(fold != k), blocks, l2, aux)
        part = data.subset(val)
        z_all.append(
            head.reward(part.chosen, data.layers) - head.reward(part.rejected, data.layers)
        )
        t_all.append(part.target)
    if not z_all:
        return {"logloss": float("inf"), "accuracy": float("nan")}
    z, t = np.concatenate(z_all), np.concatenate(t_all)
    logloss = float(np.mean(np.logaddexp(0, z) - t * z))
    return {"logloss": logloss, "accuracy": float(np.mean((z > 0) == (t > 0.5)))}


def train_head(
    name: str, data: HeadData, config: TrainConfig, log: Callable[[str], None] | None = None
) -> tuple[LinearHead, dict[str, Any]]:
    """Choose blocks and L2 by cross-validation (where not fixed), then fit on all training pairs."""
    grid = [
        (b, lam)
        for b in ([config.blocks] if config.blocks else block_choices(data.layers))
        for lam in ((config.l2,) if config.l2 is not None else config.l2_grid)
    ]
    table: list[dict[str, Any]] = []
    for blocks, l2 in grid if len(grid) > 1 else []:
        cv = cross_validate(data, blocks, l2, config.folds, config.aux_confidence)
        table.append({"blocks": blocks, "l2": l2, **cv})
        if log:
            log(
                f"  cv {name}: {_blocks_text(blocks)} l2={l2:g}: logloss {cv['logloss']:.4f} acc {cv['accuracy']:.3f}"
            )
    # Ties (to 4 decimals) go to the stronger penalty: the simpler head.
    best: tuple[list[Block], float] = (
        grid[0]
        if not table
        else min(
            ((r["blocks"], r["l2"]) for r in table), key=lambda bl: (_cv_loss(table, bl), -bl[1])
        )
    )
    head = fit_head(name, data, best[0], best[1], config.aux_confidence)
    return head, {"chosen": {"blocks": best[0], "l2": best[1]}, "cv": table}


def _cv_loss(table: list[dict[str, Any]], choice: tuple[list[Block], float]) -> float:
    row = next(r for r in table if (r["blocks"], r["l2"]) == choice)
    return float(round(row["logloss"], 4))


def _blocks_text(blocks: Sequence[Block]) -> str:
    return "+".join(f"{p}@{layer}" for p, layer in blocks)


# --------------------------------------------------------------------------- LoRA fine-tune


class LoraConfig(BaseModel):
    """Where the adapters go and how they are trained (recorded in a LoRA student's config)."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(default=8, ge=1, description="Rank of each adapter.")
    alpha: float = Field(
        default=16.0, gt=0, description="Scale numerator: the update is alpha / rank · B A."
    )
    targets: tuple[str, ...] = Field(
        default=("q_proj", "v_proj"), description="Names of adapted linear layers."
    )
    lr: float = Field(default=2e-4, gt=0, description="Adapter learning rate (AdamW).")
    head_lr: float = Field(default=1e-3, gt=0, description="Head learning rate (AdamW).")
    epochs: int = Field(default=1, ge=1, description="Passes over the training pairs.")
    batch_pairs: int = Field(default=8, ge=1, description="Pairs per optimiser step.")
    max_steps: int | None = Field(
        default=None, ge=1, description="Stop after this many steps (smoke tests)."
    )
    seed: int = Field(
        default=0, description="Seed for the adapter initialisation and the pair order."
    )


@dataclass
class FinetunePair:
    """One training pair for the fine-tune: encoded texts, the target and the head it trains."""

    chosen: Encoded
    rejected: Encoded
    target: float
    head: str


def finetune_bt(
    extractor: FeatureExtractor,
    pairs: Sequence[FinetunePair],
    heads: dict[str, LinearHead],
    config: LoraConfig,
    log: Callable[[str], None] | None = None,
) -> dict[str, np.ndarray]:
    """Bradley–Terry fine-tune of LoRA adapters and the heads' weights; returns the adapter weights.

    Each head must use a single feature block (the fine-tune reads one pooled state); heads start
    from their frozen-feature fit, so the adapters start from a working reward model. Runs on CPU or
    GPU.
    """
    import torch

    from harness.student.lora import add_lora, lora_parameters, lora_state

    torch.manual_seed(config.seed)
    add_lora(extractor.base, config)
    dev = extractor.local.device
    weights = {
        n: torch.nn.Parameter(torch.tensor(h.weight, dtype=torch.float32, device=dev))
        for n, h in heads.items()
    }
    opt = torch.optim.AdamW(
        [
            {"params": lora_parameters(extractor.base), "lr": config.lr},
            {"params": list(weights.values()), "lr": config.head_lr},
        ],
        weight_decay=0.0,
    )
    order = np.random.default_rng(config.seed).permutation(len(pairs))
    steps = 0
    for _epoch in range(config.epochs):
        for start in range(0, len(order), config.batch_pairs):
            batch = [pairs[i] for i in order[start : start + config.batch_pairs]]
            loss = sum(
                _pair_loss(extractor, p, heads[p.head], weights[p.head]) for p in batch
            ) / len(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if log:
                log(f"  finetune step {steps}: loss {float(loss):.4f}")
            if config.max_steps and steps >= config.max_steps:
                break
    for name, w in weights.items():
        heads[name].weight = w.detach().cpu().double().numpy()
    return lora_state(extractor.base)


def _pair_loss(extractor: FeatureExtractor, pair: FinetunePair, head: LinearHead, w: Any) -> Any:
    import torch

    from harness.student.features import pool_responses, prompt_kv

    if pair.chosen.prompt != pair.rejected.prompt:
        raise ValueError("a fine-tune pair must share its prompt")
    ((pool, layer),) = head.blocks
    dev = extractor.local.device
    kv = prompt_kv(extractor.base, pair.chosen.prompt, dev)
    pooled = pool_responses(
        extractor.base,
        kv,
        len(pair.chosen.prompt),
        [pair.chosen.response, pair.rejected.response],
        extractor.spec.layers,
        extractor.local.pad_id,
        dev,
    )
    x = pooled[:, POOLS.index(pool), list(extractor.spec.layers).index(layer)]
    scale = torch.tensor(head.scale, dtype=torch.float32, device=dev)
    r = (x / scale) @ w  # the mean cancels in the difference
    z = r[0] - r[1]
    return torch.nn.functional.softplus(z) - pair.target * z
