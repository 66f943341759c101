"""Build the coherence suites from the USR Topical-Chat human ratings.

Reads ``topical_chat_usr/topical_chat.json`` from the shared data folder (default ``../shared/data``
next to the checkout): 60 Topical-Chat dialogue contexts, each with 6 replies (the original human
reply, a new human reply and four decoding variants of one model), every reply rated for coherence
(1-3) by three people (USR, Mehri and Eskenazi, 2020). Writes, under ``--out`` (default
``suites/``):

- ``coherence.yaml`` + ``coherence.cases.jsonl``: all 60 contexts, one case each, with the 6 replies
  as candidates carrying ``human_scores: {coherence: mean}`` and ``n_raters: 3``; each case is
  tagged ``split-train`` or ``split-heldout``;
- ``coherence_heldout.yaml`` + ``coherence_heldout.cases.jsonl``: the held-out contexts only, for
  judging and for measuring students on dialogues they never saw.

The split is by context, never by reply: the ``HELDOUT`` contexts with the lowest salted SHA-256 of
their dialogue text are held out. No random state, no clock: a rerun on the same data writes the
same bytes.

Usage: ``python scripts/build_coherence_suite.py [--source DIR] [--out DIR]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from harness.records import Candidate, Case, Generator, Message, Role, Suite

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_demo_suite import cases_jsonl, suite_yaml, write_atomic  # a sibling script

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "suites"
FILE = "topical_chat_usr/topical_chat.json"
SALT = "constitutional-harness/coherence/v1"
HELDOUT = 30  # of 60 contexts: as many held out as trained on, so the held-out CI is not too wide
RATERS = 3  # USR: every Topical-Chat reply was rated by three annotators
TRAIN_TAG, HELDOUT_TAG = "split-train", "split-heldout"

GENERATORS = {  # USR system id -> (generator name, description)
    "Original Ground Truth": ("original-human", "The reply the human partner actually wrote."),
    "New Human Generated": (
        "new-human",
        "A new human reply written for USR, given the same context.",
    ),
    "Argmax Decoding": (
        "argmax",
        "A Transformer trained on Topical-Chat, greedy (argmax) decoding.",
    ),
    "Nucleus Decoding (p = 0.3)": ("nucleus-0.3", "The same model, nucleus sampling with p = 0.3."),
    "Nucleus Decoding (p = 0.5)": ("nucleus-0.5", "The same model, nucleus sampling with p = 0.5."),
    "Nucleus Decoding (p = 0.7)": ("nucleus-0.7", "The same model, nucleus sampling with p = 0.7."),
}
SOURCE_NOTE = (
    "USR Topical-Chat ratings (Mehri and Eskenazi, 2020, 'USR: An Unsupervised and Reference Free "
    "Evaluation Metric for Dialog Generation'), as copied in github.com/maszhongming/UniEval "
    "(repo MIT licence); dialogues from Amazon's Topical-Chat "
    "(github.com/alexa/Topical-Chat). The licence of the underlying dialogues and ratings was not "
    "verified; text kept as released (lower-cased, tokenised)."
)


def turns(source: str) -> list[Message]:
    """The dialogue before the reply as chat turns: the last turn is the partner's (``user``)."""
    said = [t.strip() for t in source.split("\n") if t.strip()]
    roles: list[Role] = ["user" if (len(said) - i) % 2 else "assistant" for i in range(len(said))]
    return [Message(role=r, content=t) for r, t in zip(roles, said, strict=True)]


def context_key(source: str) -> str:
    """Salted hash of a dialogue: the order in which contexts are held out."""
    return hashlib.sha256(f"{SALT}:{source}".encode()).hexdigest()


def group_rows(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Rows grouped by dialogue context, in the file's order of first appearance."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["source"], []).append(row)
    for source, members in groups.items():
        names = sorted(GENERATORS[r["system_id"]][0] for r in members)
        if len(names) != len(set(names)):
            raise ValueError(f"context {source[:40]!r}...: two replies from one system")
    return list(groups.items())


def make_case(index: int, source: str, members: list[dict[str, Any]], held: bool) -> Case:
    """One case: the dialogue, its rated replies, tags saying the split."""
    order = list(GENERATORS)
    members = sorted(members, key=lambda r: order.index(r["system_id"]))
    candidates = [
        Candidate(
            generator=GENERATORS[r["system_id"]][0],
            response=r["system_output"].strip(),
            human_scores={"coherence": round(float(r["scores"]["coherence"]), 4)},
            n_raters=RATERS,
        )
        for r in members
    ]
    return Case(
        id=f"tc-usr-{index:02d}",
        prompt=turns(source),
        tags=["usr-topical-chat", "multi-turn", HELDOUT_TAG if held else TRAIN_TAG],
        candidates=candidates,
    )


def build_cases(rows: list[dict[str, Any]]) -> list[Case]:
    """Every context as a case, numbered in file order; the ``HELDOUT`` lowest hashes held out."""
    groups = group_rows(rows)
    held = set(sorted((context_key(s) for s, _ in groups))[:HELDOUT])
    return [
        make_case(i, source, members, context_key(source) in held)
        for i, (source, members) in enumerate(groups)
    ]


def suite_record(sid: str, description: str) -> dict[str, Any]:
    """A suite YAML mapping, validated as a ``Suite``."""
    record: dict[str, Any] = {
        "id": sid,
        "description": description,
        "constitution": "default",
        "judges": ["student", "rules", "smollm2"],
        "generators": {name: {"description": d} for name, d in GENERATORS.values()},
        "cases_file": f"{sid}.cases.jsonl",
        "sources": [SOURCE_NOTE],
    }
    Suite.model_validate(record)
    assert all(Generator.model_validate(g) for g in record["generators"].values())
    return record


def build_files(source: Path) -> dict[str, str]:
    """Output file name -> text, built and validated in memory."""
    rows = json.loads((source / FILE).read_text(encoding="utf-8"))
    cases = build_cases(rows)
    heldout = [c for c in cases if HELDOUT_TAG in c.tags]
    n = len(cases)
    full = suite_record(
        "coherence",
        f"Conversational coherence with human ratings: {n} Topical-Chat dialogue contexts, "
        "6 replies each (human and model), every reply rated for coherence on a 1-3 scale by "
        f"three people (USR). Cases are tagged {TRAIN_TAG} ({n - len(heldout)}) or "
        f"{HELDOUT_TAG} ({len(heldout)}): split by context, so a student trained on one part is "
        "measured on dialogues it never saw.",
    )
    held = suite_record(
        "coherence_heldout",
        f"The {len(heldout)} held-out contexts of the coherence suite ({HELDOUT_TAG}): "
        "Topical-Chat dialogues whose 6 replies were rated for coherence (1-3) by three people "
        "(USR). No student of this project was trained on them.",
    )
    return {
        "coherence.yaml": suite_yaml(full),
        "coherence.cases.jsonl": cases_jsonl(cases),
        "coherence_heldout.yaml": suite_yaml(held),
        "coherence_heldout.cases.jsonl": cases_jsonl(heldout),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: build the coherence suites from --source into --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="shared data folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)
    if not (args.source / FILE).is_file():
        print(f"error: {args.source / FILE} not found", file=sys.stderr)
        return 2
    try:
        files = build_files(args.source)
    except (OSError, ValueError, KeyError) as exc:
        print(
            f"error: cannot build the coherence suites from {args.source}: {exc}", file=sys.stderr
        )
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        write_atomic(args.out / name, text)
        print(f"wrote {args.out / name} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
