"""The versioned student artefact: a folder with a config, the weights and a training card.

::

    student.json        StudentConfig: format version, feature recipe, base model, heads, training,
    metrics
    weights.npz         per head: mean, scale, weight (float32); a LoRA student adds its adapter
    weights
    TRAINING_CARD.md    the data, where its labels came from, the hyperparameters and the held-out
    metrics

A folder is written under a temporary name and renamed into place; an existing folder is only
replaced when it already holds a student. ``embedded`` names the student committed in
``students/embedded``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import ConfigError
from harness.paths import project_root
from harness.student.features import FeatureSpec
from harness.student.train import LinearHead, LoraConfig

FORMAT: Literal["harness-student"] = "harness-student"
FORMAT_VERSION = 1
CONFIG, WEIGHTS, CARD = "student.json", "weights.npz", "TRAINING_CARD.md"
ARRAYS = ("mean", "scale", "weight")


class HeadRecord(BaseModel):
    """One head: its feature blocks, its L2 and its pointwise calibration."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Head name; by default a principle id.")
    blocks: list[tuple[str, int]] = Field(
        description="(pool, layer) feature blocks the head reads."
    )
    l2: float = Field(description="L2 penalty it was fitted with.")
    center: float = Field(description="Reward mapped to the middle of the rubric scale.")
    spread: float = Field(description="Reward scale of the logistic calibration.")
    tail_penalty: float = Field(
        default=0.0, description="Reward lost per response token beyond the feature window."
    )


class StudentConfig(BaseModel):
    """student.json."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["harness-student"] = FORMAT
    format_version: int = FORMAT_VERSION
    id: str = Field(description="Name of the student.")
    version: str = Field(description="Version of this student (bump when retrained).")
    created: str = Field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )
    kind: Literal["linear", "lora"] = Field(
        description="linear: heads over frozen features; lora: adapters too."
    )
    features: FeatureSpec
    base_model_id: str = Field(
        description="Loaded weights the features come from (converted GGUF folder name)."
    )
    heads: list[HeadRecord]
    lora: LoraConfig | None = None
    training: dict[str, Any] = Field(
        default_factory=dict, description="Data, label source, hyperparameters."
    )
    metrics: dict[str, Any] = Field(default_factory=dict, description="Held-out metrics per head.")


#: The reward-to-rubric calibration kept next to a student (see :mod:`harness.student.calibrate`).
CALIBRATION = "calibration.json"


@dataclass
class Student:
    """A loaded student: config, heads and (for LoRA) adapter weights."""

    config: StudentConfig
    heads: dict[str, LinearHead]
    lora: dict[str, np.ndarray] | None
    path: Path
    calibration: dict[str, Any] | None = None  # calibration.json, applied to the heads' mapping

    def digest(self) -> str:
        """SHA-256 of the config, weights and calibration files (changes whenever any changes)."""
        h = hashlib.sha256()
        for name in (CONFIG, WEIGHTS):
            h.update((self.path / name).read_bytes())
        if (self.path / CALIBRATION).exists():
            h.update((self.path / CALIBRATION).read_bytes())
        return h.hexdigest()


def resolve_student(ref: str | Path) -> Path:
    """``embedded`` → the committed student; anything else is a folder path."""
    return (
        project_root() / "students" / "embedded"
        if str(ref) == "embedded"
        else Path(ref).expanduser()
    )


def head_record(head: LinearHead, l2: float) -> HeadRecord:
    """The config entry of a fitted head."""
    return HeadRecord(
        name=head.name,
        blocks=[(p, int(layer)) for p, layer in head.blocks],
        l2=l2,
        center=head.center,
        spread=head.spread,
        tail_penalty=head.tail_penalty,
    )


def _arrays(
    heads: dict[str, LinearHead], lora: dict[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    out = {
        f"head/{n}/{a}": np.asarray(getattr(h, a), dtype=np.float32)
        for n, h in heads.items()
        for a in ARRAYS
    }
    out.update({f"lora/{k}": np.asarray(v, dtype=np.float32) for k, v in (lora or {}).items()})
    return out


def save_student(
    folder: Path | str,
    config: StudentConfig,
    heads: dict[str, LinearHead],
    lora: dict[str, np.ndarray] | None = None,
    card: str = "",
) -> Path:
    """Write the artefact atomically; refuses to replace a folder that does not hold a student."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not (folder / CONFIG).is_file():
        raise ConfigError(f"{folder}: exists and is not a student folder; choose another --output")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        (tmp / CONFIG).write_text(config.model_dump_json(indent=2) + "\n", encoding="utf-8")
        with (tmp / WEIGHTS).open("wb") as fh:
            np.savez(fh, **_arrays(heads, lora))  # type: ignore[arg-type]
        (tmp / CARD).write_text(card or render_card(config), encoding="utf-8")
        _swap(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def add_heads(base: Student, extra: Student, note: dict[str, Any]) -> tuple[StudentConfig, dict]:
    """``base`` with the heads of ``extra`` added, their metrics too.

    Their training record goes under ``training.added_heads``; both students must read the same
    features of the same base weights.
    """
    if (extra.config.features, extra.config.base_model_id) != (
        base.config.features,
        base.config.base_model_id,
    ):
        raise ConfigError(f"{extra.path}: its features or base model differ from {base.path}'s")
    if base.lora is not None or extra.lora is not None:
        raise ConfigError("heads can only be added between linear students (no LoRA weights)")
    names = {r.name for r in extra.config.heads}
    records = [r for r in base.config.heads if r.name not in names] + list(extra.config.heads)
    training = dict(base.config.training)
    added = [a for a in training.get("added_heads", []) if a.get("head") not in names]
    training["hyperparameters"] = [
        h for h in training.get("hyperparameters", []) if h.get("head") not in names
    ] + list(extra.config.training.get("hyperparameters", []))
    training["added_heads"] = added + [
        {"head": n, **note, "training": extra.config.training} for n in sorted(names)
    ]
    config = base.config.model_copy(
        update={
            "heads": records,
            "training": training,
            "metrics": {**base.config.metrics, **extra.config.metrics},
        }
    )
    return config, {**base.heads, **extra.heads}


def _swap(tmp: Path, folder: Path) -> None:
    """Move ``tmp`` to ``folder``, replacing an old student only once the new one is complete."""
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def load_student(ref: str | Path) -> Student:
    """Load a student folder (or ``embedded``); a missing or malformed artefact is a ConfigError."""
    path = resolve_student(ref)
    try:
        config = StudentConfig.model_validate_json((path / CONFIG).read_text(encoding="utf-8"))
        with np.load(path / WEIGHTS, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError as exc:
        raise ConfigError(
            f"student {ref!r}: {exc.filename} not found (is {path} a student folder?)"
        ) from None
    except (ValidationError, ValueError, OSError) as exc:
        raise ConfigError(f"student {ref!r}: invalid artefact in {path}: {exc}") from None
    heads = {}
    for rec in config.heads:
        try:
            a = {n: arrays[f"head/{rec.name}/{n}"].astype(np.float64) for n in ARRAYS}
        except KeyError as exc:
            raise ConfigError(f"student {ref!r}: {WEIGHTS} lacks {exc.args[0]}") from None
        heads[rec.name] = LinearHead(
            rec.name,
            [(str(pool), int(layer)) for pool, layer in rec.blocks],
            a["mean"],
            a["scale"],
            a["weight"],
            rec.center,
            rec.spread,
            rec.tail_penalty,
        )
    lora = {k[5:]: v for k, v in arrays.items() if k.startswith("lora/")} or None
    calibration = _calibration(path, heads)
    return Student(config, heads, lora, path, calibration)


def _calibration(path: Path, heads: dict[str, LinearHead]) -> dict[str, Any] | None:
    """Apply ``calibration.json`` (if any) to the heads' reward-to-rubric mapping; its records."""
    file = path / CALIBRATION
    if not file.exists():
        return None
    try:
        records = dict(json.loads(file.read_text(encoding="utf-8"))["heads"])
        for name, rec in records.items():
            if name in heads:
                heads[name].center = float(rec["center"])
                heads[name].spread = float(rec["spread"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{file}: invalid calibration: {exc}") from None
    return records


# --------------------------------------------------------------------------- training card


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3f}"
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], (list, tuple)):
        return " + ".join(f"{p}@{layer}" for p, layer in x)
    return str(x)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_none_\n"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def metric_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per head: held-out accuracy with its CI, and the reward-hacking probes."""
    rows = []
    for head, m in metrics.items():
        held = m.get("heldout", {})
        row = {
            "head": head,
            "held-out pairs": held.get("n"),
            "accuracy": held.get("accuracy"),
            "95% CI": f"[{held.get('ci_low', float('nan')):.3f}, {held.get('ci_high', float('nan')):.3f}]",
        }
        row.update(
            {
                f"beats {k}": f"{v['genuine_wins']:.0%} of {v['n']}"
                for k, v in m.get("hacks", {}).items()
            }
        )
        rows.append(row)
    return rows


RATINGS_NOTE = (
    "Rewards of every rated reply of the held-out cases against the mean human rating: "
    "pairwise accuracy over the pairs of replies to one context whose ratings differ (a reward "
    "tie counts half), Spearman and Kendall over all replies; 95 % CIs by a bootstrap over cases "
    "(contexts). Chance is 0.5 and 0."
)


def _ci(m: dict[str, Any], key: str) -> str:
    return f"{m[key]:.3f} [{m[key + '_ci_low']:.3f}, {m[key + '_ci_high']:.3f}]"


def rating_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per head measured on held-out human ratings, every figure with its 95 % CI."""
    rows = []
    for head, m in metrics.items():
        r = m.get("ratings")
        if r:
            acc = f"{r['pair_accuracy']:.3f} [{r['pair_ci_low']:.3f}, {r['pair_ci_high']:.3f}]"
            rows.append(
                {
                    "head": head,
                    "cases": r["cases"],
                    "replies": r["candidates"],
                    "pairs": r["pairs"],
                    "pairwise accuracy [95% CI]": acc,
                    "Spearman [95% CI]": _ci(r, "spearman"),
                    "Kendall [95% CI]": _ci(r, "kendall"),
                }
            )
    return rows


def _added_heads(t: dict[str, Any]) -> list[str]:
    """Card lines for heads trained apart (``harness distill``) and added to this student."""
    lines = []
    for a in t.get("added_heads", []):
        tr = a.get("training", {})
        data = ", ".join(
            f"`{d.get('input')}` (sha256 {str(d.get('sha256'))[:16]})" for d in tr.get("data", [])
        )
        lines.append(
            f"Head `{a['head']}` was trained apart and added: `{tr.get('command', '?')}` on "
            f"{data}; "
            f"labels: {tr.get('label_source', '?')}; held out: {tr.get('heldout', '?')}. "
            f"{a.get('summary', '')}"
        )
    return lines


def render_card(config: StudentConfig) -> str:
    """TRAINING_CARD.md from the config's training record and metrics."""
    t = config.training
    spec = config.features
    about = "\n".join(
        [
            f"- kind: {config.kind}; base model: `{spec.model}` (`{config.base_model_id}`)",
            f"- features: recipe `{spec.recipe}`, last {spec.prompt_tokens} conversation tokens, first "
            f"{spec.response_tokens} response tokens, layers {list(spec.layers)}",
            f"- created: {config.created}; reproduce with: `{t.get('command', '?')}`",
        ]
    )
    blocks = [
        f"# Student `{config.id}` {config.version}",
        t.get("summary", ""),
        about,
        "## Data and labels",
        _table(t.get("data", [])),
        f"Label source: {t.get('label_source', '?')}",
        f"Held out: {t.get('heldout', '?')}",
        f"Reward-hacking negatives: {t.get('hacks', 'none')}",
        *_added_heads(t),
        "## Hyperparameters",
        _table(t.get("hyperparameters", [])),
        "## Held-out metrics",
        _table(metric_rows(config.metrics)),
    ]
    if any("ratings" in m for m in config.metrics.values()):
        blocks += ["## Held-out human ratings", RATINGS_NOTE, _table(rating_rows(config.metrics))]
    if any("pgr" in m for m in config.metrics.values()):
        rows = [{"head": h, **m["pgr"]} for h, m in config.metrics.items() if "pgr" in m]
        blocks += ["## Weak-to-strong", _table(rows)]
    blocks += [
        "## Limitations",
        t.get("limitations", "See the held-out metrics; nothing else was measured."),
    ]
    return "\n\n".join(str(b).strip() for b in blocks if str(b).strip()) + "\n"


def to_json(x: Any) -> Any:
    """Numpy scalars and arrays as plain JSON values."""
    return json.loads(
        json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    )
