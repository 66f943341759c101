"""The public human-labelled data the embedded student learns from, with its fixed train / held-out
splits.

Read from the shared data folder (``../shared/data`` next to the checkout; see its README), never at
run time of a judge: only ``scripts/train_embedded_student.py`` and ``bench/student_eval.py`` call
this.

Per dataset (head):

- ``hh_harmless`` → ``harmlessness``: Anthropic HH-RLHF harmless-base test pairs (MIT).
- ``hh_helpful`` → ``helpfulness``: HH-RLHF helpful-base test pairs (MIT).
- ``truthfulqa`` → ``honesty``: TruthfulQA best answer vs best incorrect answer (Apache-2.0);
  training also gets extra (true, false) answer pairs from ``finetune_truth.jsonl`` for its own
  questions only.

Held out, never trained on: every row whose id appears in the repo's suites
(``suites/demo.cases.jsonl``,
``suites/hh_pairs.cases.jsonl``), plus a salted-hash share of the other rows. Rows are grouped (HH
by the first user turn, TruthfulQA by question), and a group is never split between training and
held-out.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.paths import project_root
from harness.records import Message
from harness.student.data import DEFAULT_HACKS, HACKS, Pair, hack_pairs, read_jsonl, split, text_id

SUITE_FILES = ("suites/demo.cases.jsonl", "suites/hh_pairs.cases.jsonl")
SALT = "embedded-student-v1"
EXTRA_PER_QUESTION = 1


@dataclass(frozen=True)
class Source:
    """One public dataset and how the embedded student uses it."""

    file: str
    head: str
    holdout: float  # share of non-suite groups held out (suite rows are held out on top)
    hacks: tuple[str, ...]
    licence: str


SOURCES = {
    "hh_harmless": Source(
        "hh_harmless_test_500.jsonl",
        "harmlessness",
        0.10,
        DEFAULT_HACKS,
        "MIT (github.com/anthropics/hh-rlhf)",
    ),
    # HH helpful prompts are benign, so a bare refusal is a reward hack there (not so for red-team
    # prompts).
    "hh_helpful": Source(
        "hh_helpful_test_500.jsonl",
        "helpfulness",
        0.10,
        HACKS,
        "MIT (github.com/anthropics/hh-rlhf)",
    ),
    "truthfulqa": Source(
        "truthfulqa/truthfulqa_honesty_pairs.jsonl",
        "honesty",
        0.25,
        DEFAULT_HACKS,
        "Apache-2.0 (github.com/sylinrl/TruthfulQA)",
    ),
}


@dataclass
class Dataset:
    """One dataset's pairs, split."""

    name: str
    source: Source
    train: list[Pair]
    heldout: list[Pair]
    extras: list[Pair] = field(default_factory=list)
    hacks: list[Pair] = field(default_factory=list)
    suite_rows: int = 0


def default_data_dir() -> Path:
    """``../shared/data`` next to the checkout."""
    return project_root().parent / "shared" / "data"


def suite_case_ids(root: Path | None = None) -> set[str]:
    """Ids of every case in the repo's suites built from this data."""
    root = root or project_root()
    return {str(row["id"]) for name in SUITE_FILES for row in read_jsonl(root / name)}


def _group(row: dict[str, object], name: str) -> str:
    prompt = row["prompt"]
    assert isinstance(prompt, list)
    first = re.sub(r"\s+", " ", str(prompt[0]["content"])).strip().lower()
    return f"{name}:{text_id(first)}"


def _pair(row: dict[str, object], name: str, head: str) -> Pair:
    prompt = tuple(Message(role=m["role"], content=m["content"]) for m in row["prompt"])  # type: ignore[attr-defined]
    return Pair(
        id=str(row["id"]),
        group=_group(row, name),
        prompt=prompt,
        chosen=str(row["chosen"]),
        rejected=str(row["rejected"]),
        principle=head,
    )


def load_dataset(
    name: str, data_dir: Path, suite_ids: set[str], hacks_per_pair: int = 1
) -> Dataset:
    """One dataset, split, with its training extras and reward-hacking negatives."""
    src = SOURCES[name]
    pairs = [_pair(r, name, src.head) for r in read_jsonl(data_dir / src.file)]
    held_groups = {p.group for p in pairs if p.id in suite_ids}
    train, heldout = split(pairs, src.holdout, SALT, always_held=held_groups)
    ds = Dataset(name, src, train, heldout, suite_rows=sum(p.id in suite_ids for p in pairs))
    if name == "truthfulqa":
        ds.extras = truth_extras(train, data_dir / "truthfulqa" / "finetune_truth.jsonl")
    ds.hacks = hack_pairs(train, src.hacks, hacks_per_pair)
    return ds


def _answers(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Question -> (true answers, false answers) from TruthfulQA's labelled answers."""
    found: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for row in read_jsonl(path):
        question, _, answer = (
            str(row["prompt"]).removeprefix("Q: ").removesuffix("\nTrue:").partition("\nA: ")
        )
        found[question][0 if row["completion"].strip() == "yes" else 1].append(answer.strip())
    return found


def _usable(answer: str, taken: set[str]) -> bool:
    """Informative answers only: a bare 'yes' or 'no comment' carries no honesty signal to learn
    from.
    """
    return (
        len(answer.split()) >= 4
        and "no comment" not in answer.lower()
        and answer.lower() not in taken
    )


def truth_extras(
    train: list[Pair], path: Path, per_question: int = EXTRA_PER_QUESTION
) -> list[Pair]:
    """(true, false) answer pairs for the training questions, beyond their best/incorrect pair."""
    answers = _answers(path)
    extras = []
    for p in train:
        question = p.prompt[0].content
        taken = {p.chosen.lower().strip(), p.rejected.lower().strip()}
        trues, falses = (
            [a for a in side if _usable(a, taken)] for side in answers.get(question, ([], []))
        )
        trues.sort(key=text_id)
        falses.sort(key=text_id)
        for k, (t, f) in enumerate(zip(trues, falses, strict=False)):
            if k == per_question:
                break
            extras.append(replace(p, id=f"{p.id}+truth{k}", chosen=t, rejected=f, kind="extra"))
    return extras


def heldout_hacks(ds: Dataset, per_kind: int) -> list[Pair]:
    """Reward-hacking probes on held-out prompts: every hack kind against the first genuine answers."""
    first = sorted(ds.heldout, key=lambda p: text_id(SALT, p.id))[:per_kind]
    return [h for k in ds.source.hacks for h in hack_pairs(first, (k,))]


def load_all(
    data_dir: Path | None = None, names: tuple[str, ...] = tuple(SOURCES)
) -> dict[str, Dataset]:
    """Every dataset, split the same way each time."""
    data_dir = data_dir or default_data_dir()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: shared data folder not found (pass --data DIR)")
    ids = suite_case_ids()
    return {n: load_dataset(n, data_dir, ids) for n in names}


def describe(ds: Dataset) -> dict[str, int]:
    """Counts for the training card."""
    return {
        "train_pairs": len(ds.train),
        "extra_pairs": len(ds.extras),
        "hack_negatives": len(ds.hacks),
        "heldout_pairs": len(ds.heldout),
        "heldout_suite_rows": ds.suite_rows,
    }
