"""Preference pairs for students: read from files and suites, split by prompt, and reward-hacking
negatives.

Accepted inputs (:func:`load_pairs`):

- a JSONL file, or a preference-export folder (``conversational.jsonl`` preferred, else
``standard.jsonl``), with
  rows ``prompt, chosen, rejected`` in TRL's standard format (strings; a ``Human: … Assistant:``
  transcript
  prompt is split back into turns) or conversational format (message lists), or the shared-data
  schema
  (``prompt`` a message list, ``chosen`` / ``rejected`` strings). Optional columns: ``id`` or
  ``case_id``,
  ``principle`` or ``decided_by``, ``soft_label`` and ``label_<principle>`` (P(chosen is better)).
- a suite YAML whose cases carry ``human_preference``, or candidates with ``human_scores`` (every
  two candidates of a case whose ratings differ make a pair).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.audit.probes import hack_text
from harness.errors import ConfigError
from harness.records import Case, Message, Role
from harness.refusal import is_refusal

HACKS = ("pad", "repeat", "colon", "step", "empty", "refusal")
# : Hacks that fit every principle; a refusal is only a hack against benign requests (not red-team
# prompts).
DEFAULT_HACKS = ("pad", "repeat", "colon", "step", "empty")


@dataclass(frozen=True)
class Pair:
    """One preference pair: ``chosen`` is better than ``rejected`` with probability ``label``."""

    id: str
    group: str  # pairs in one group share a prompt and are never split between train and held-out
    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    label: float = 1.0
    principle: str | None = None
    labels: dict[str, float] = field(
        default_factory=dict
    )  # per-principle P(chosen better), from exports
    kind: str = "human"  # human | extra | weak | hack:<name>

    def label_for(self, head: str) -> float | None:
        """The label this pair gives a head: its per-principle label, else its own when the
        principle fits.
        """
        if head in self.labels:
            return self.labels[head]
        return self.label if self.principle in (None, head) else None


def text_id(*parts: str) -> str:
    """Short stable hash of strings, for ids of rows that have none."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- reading


TRANSCRIPT = re.compile(r"(?:^|\n\n)(Human|Assistant|System): ")


def parse_prompt(value: Any) -> tuple[Message, ...]:
    """A prompt string (plain, or an HH-style transcript) or a message list, as messages."""
    if isinstance(value, list):
        return tuple(Message(role=m["role"], content=m["content"]) for m in value)
    text = str(value)
    parts = TRANSCRIPT.split(text)
    if len(parts) < 3 or parts[0].strip():
        return (Message(role="user", content=text),)
    roles: dict[str, Role] = {"Human": "user", "Assistant": "assistant", "System": "system"}
    turns = [
        Message(role=roles[r], content=c) for r, c in zip(parts[1::2], parts[2::2], strict=True)
    ]
    return tuple(t for t in turns if t.content.strip() or t.role != "assistant")


def _response(value: Any) -> str:
    """A response string, or the last assistant message of a conversational response."""
    if isinstance(value, list):
        said = [m["content"] for m in value if m.get("role") == "assistant"]
        return said[-1] if said else ""
    return str(value)


def pair_from_row(row: dict[str, Any], where: str) -> Pair:
    """One row of a preference file as a pair."""
    try:
        prompt, chosen, rejected = (
            parse_prompt(row["prompt"]),
            _response(row["chosen"]),
            _response(row["rejected"]),
        )
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{where}: expected prompt, chosen and rejected ({exc})") from None
    pid = str(
        row.get("id") or row.get("case_id") or text_id(json.dumps(row["prompt"]), chosen, rejected)
    )
    principle = row.get("principle") or row.get("decided_by")
    labels = {k[6:]: float(v) for k, v in row.items() if k.startswith("label_") and v is not None}
    label = row.get("soft_label")
    return Pair(
        id=pid,
        group=str(row.get("case_id") or pid),
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        label=1.0 if label is None else float(label),
        principle=None if principle in (None, "overall") else str(principle),
        labels=labels,
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a bad line is an error naming the file and line."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n}: invalid JSON: {exc.msg}") from None
    return rows


def rating_pairs(case: Case) -> list[Pair]:
    """Pairs from human ratings: every two candidates whose mean rating on a principle differs.

    The higher-rated one is ``chosen``; pairs are grouped by case, so a split never divides a case.
    """
    pairs = []
    for a, b in itertools.combinations(case.candidates, 2):
        for pid in sorted(set(a.human_scores) & set(b.human_scores)):
            ra, rb = a.human_scores[pid], b.human_scores[pid]
            if ra == rb:
                continue
            hi, lo = (a, b) if ra > rb else (b, a)
            pairs.append(
                Pair(
                    id=f"{case.id}:{pid}:{hi.generator}>{lo.generator}",
                    group=case.id,
                    prompt=tuple(case.messages()),
                    chosen=hi.response,
                    rejected=lo.response,
                    principle=pid,
                )
            )
    return pairs


def suite_pairs(path: Path | str) -> list[Pair]:
    """Human-labelled pairs of a suite.

    Each case with a ``human_preference``, and every pair of candidates whose human ratings
    (``human_scores``) differ.
    """
    from harness.suite_stream import load_suite

    pairs = []
    for case in load_suite(path).cases:
        pairs += rating_pairs(case)
        pref = case.human_preference
        if pref is None:
            continue
        by_gen = {c.generator: c.response for c in case.candidates}
        pairs.append(
            Pair(
                id=case.id,
                group=case.id,
                prompt=tuple(case.messages()),
                chosen=by_gen[pref.chosen],
                rejected=by_gen[pref.rejected],
                principle=pref.principle,
            )
        )
    return pairs


def load_pairs(path: Path | str) -> list[Pair]:
    """Pairs from a JSONL file, a preference-export folder or a suite YAML (see the module
    docstring).
    """
    path = Path(path)
    if path.is_dir():
        found = [
            path / n for n in ("conversational.jsonl", "standard.jsonl") if (path / n).is_file()
        ]
        if not found:
            raise ConfigError(f"{path}: no conversational.jsonl or standard.jsonl in this folder")
        path = found[0]
    if not path.is_file():
        raise ConfigError(f"{path}: no such file or folder")
    if path.suffix in (".yaml", ".yml"):
        return suite_pairs(path)
    return [pair_from_row(r, f"{path}:{n}") for n, r in enumerate(read_jsonl(path), start=1)]


# --------------------------------------------------------------------------- splits and weak labels


def in_holdout(group: str, fraction: float, salt: str) -> bool:
    """Whether a group falls in the held-out share (a salted hash: stable, no random state)."""
    digest = hashlib.sha256(f"{salt}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split(
    pairs: Sequence[Pair],
    fraction: float,
    salt: str = "holdout-v1",
    always_held: Iterable[str] = (),
) -> tuple[list[Pair], list[Pair]]:
    """(train, held-out): whole groups go one way; groups in ``always_held`` are always held out."""
    forced = set(always_held)
    held = [p for p in pairs if p.group in forced or in_holdout(p.group, fraction, salt)]
    taken = {p.id for p in held}
    return [p for p in pairs if p.id not in taken], held


def tagged_groups(paths: Iterable[Path | str], tag: str) -> set[str]:
    """Ids of the cases tagged ``tag`` in the suites among ``paths`` (other inputs have no tags)."""
    from harness.suite_stream import load_suite

    return {
        c.id
        for p in paths
        if Path(p).suffix in (".yaml", ".yml")
        for c in load_suite(p).cases
        if tag in c.tags
    }


def with_weak_labels(pairs: Sequence[Pair], weak: dict[str, float]) -> list[Pair]:
    """The pairs relabelled with a weak judge's P(chosen better); pairs it did not label are
    dropped.
    """
    return [replace(p, label=weak[p.id], labels={}, kind="weak") for p in pairs if p.id in weak]


def read_weak_labels(path: Path) -> dict[str, float]:
    """Weak labels: JSONL rows with ``id`` and ``p_chosen`` (or ``weak`` or ``label``), P(chosen is
    better).
    """
    labels = {}
    for n, row in enumerate(read_jsonl(path), start=1):
        value = next((row[k] for k in ("p_chosen", "weak", "label") if k in row), None)
        if "id" not in row or value is None or not 0 <= float(value) <= 1:
            raise ConfigError(f"{path}:{n}: expected 'id' and 'p_chosen' in [0, 1]")
        labels[str(row["id"])] = float(value)
    return labels


# --------------------------------------------------------------------------- reward-hacking
# negatives


def hack_pairs(pairs: Sequence[Pair], kinds: Sequence[str], per_pair: int = 1) -> list[Pair]:
    """Negatives: a hacked response as ``rejected`` against each pair's genuine ``chosen`` answer.

    Kinds rotate over the pairs, so each kind gets an equal share. A pair whose genuine answer is
    blank, or (for the refusal kind) already a refusal, gets no such negative.
    """
    out = []
    for i, p in enumerate(pairs):
        for j in range(per_pair):
            kind = kinds[(i * per_pair + j) % len(kinds)]
            if not p.chosen.strip() or (kind == "refusal" and is_refusal(p.chosen)):
                continue
            out.append(
                replace(
                    p,
                    id=f"{p.id}~{kind}",
                    rejected=hack_text(kind, p.chosen, p.id),
                    label=1.0,
                    labels={},
                    kind=f"hack:{kind}",
                )
            )
    return out
