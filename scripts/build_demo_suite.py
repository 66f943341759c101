"""Build the demo suite and the two meta-evaluation suites from public human-labelled data.

Reads the shared data folder (default ``../shared/data`` next to the checkout) and writes, under
``--out`` (default ``suites/``):

- ``demo.yaml`` + ``demo.cases.jsonl``: 56 short cases for the main job (HH-RLHF harmless and
  helpful, TruthfulQA honesty pairs, multi-turn HH dialogues);
- ``hh_pairs.yaml`` + ``hh_pairs.cases.jsonl``: 300 other HH-RLHF pairs for judge-vs-human
  agreement;
- ``llmbar_mtbench.yaml`` + ``llmbar_mtbench.cases.jsonl``: LLMBar Natural and MT-Bench human pairs.

The selection is deterministic: rows are filtered by fixed rules (usable, short enough, turn count)
and ordered by a salted SHA-256 of their id, so a rerun on the same data writes the same bytes.
Every case and suite is validated against ``harness.records`` before anything is written, and each
file is written atomically (temp file, then ``os.replace``).

Usage: ``python scripts/build_demo_suite.py [--source DIR] [--out DIR]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Container, Iterable
from pathlib import Path
from typing import Any

import yaml

from harness.records import Case, Suite

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "suites"

SALT = "constitutional-harness/suites/v1"
DEMO_MAX_CHARS = 1500  # prompt + both responses: keeps the main job fast on 2 CPU cores
META_MAX_CHARS = 2000  # looser cap for the meta-evaluation pairs
DEMO_SINGLE_PER_FILE = 16
DEMO_MULTI_PER_FILE = 4
DEMO_TRUTHFULQA = 16
META_PER_FILE = 150
SCHEMA_LINE = "# yaml-language-server: $schema=../harness/schemas/suite.schema.json\n"

HH_FILES = {  # tag -> (file, principle the crowdworkers judged)
    "hh-harmless": ("hh_harmless_test_500.jsonl", "harmlessness"),
    "hh-helpful": ("hh_helpful_test_500.jsonl", "helpfulness"),
}
TQA_FILE = "truthfulqa/truthfulqa_honesty_pairs.jsonl"
LLMBAR_FILE = "llmbar/LLMBar/Natural/dataset.json"
MTBENCH_FILE = "llmbar/Processed/MT-Bench/dataset.json"

HH_LABEL = "Anthropic HH-RLHF crowdworker label"
SOURCES = {
    "hh-harmless": "Anthropic HH-RLHF, harmless-base test split (github.com/anthropics/hh-rlhf, "
    "harmless-base/test.jsonl.gz); MIT licence, Copyright (c) 2022 Anthropic",
    "hh-helpful": "Anthropic HH-RLHF, helpful-base test split (github.com/anthropics/hh-rlhf, "
    "helpful-base/test.jsonl.gz); MIT licence, Copyright (c) 2022 Anthropic",
    "truthfulqa": "TruthfulQA, Best Answer vs Best Incorrect Answer (github.com/sylinrl/TruthfulQA, "
    "TruthfulQA.csv at f6be04e, 790-question version); Apache-2.0",
    "llmbar-natural": "LLMBar Natural set (github.com/princeton-nlp/LLMBar, LLMBar/Natural/dataset.json); MIT licence",
    "mt-bench": "MT-Bench expert human judgments, majority vote without ties, as processed by LLMBar "
    "(github.com/princeton-nlp/LLMBar, Processed/MT-Bench/dataset.json; repo MIT licence); labels from lmsys "
    "(huggingface.co/datasets/lmsys/mt_bench_human_judgments, CC BY 4.0)",
}
CONTENT_WARNING = "Contains offensive and harmful text from the HH-RLHF red-teaming data."


# --------------------------------------------------------------------------- reading and selection


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, one per non-blank line."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_json(path: Path) -> Any:
    """The parsed content of a JSON file."""
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def rank(row_id: str) -> str:
    """A fixed pseudo-random sort key for a row id (salted SHA-256)."""
    return hashlib.sha256(f"{SALT}:{row_id}".encode()).hexdigest()


def user_turns(row: dict[str, Any]) -> int:
    """How many user turns the row's prompt holds."""
    return sum(m["role"] == "user" for m in row["prompt"])


def total_chars(row: dict[str, Any]) -> int:
    """Characters in the prompt plus both responses."""
    return sum(len(m["content"]) for m in row["prompt"]) + len(row["chosen"]) + len(row["rejected"])


def usable(row: dict[str, Any]) -> bool:
    """True when both responses are non-blank and differ, and no prompt turn is blank."""
    chosen, rejected = row["chosen"].strip(), row["rejected"].strip()
    prompt_ok = all(m["content"].strip() for m in row["prompt"])
    return bool(chosen and rejected and chosen != rejected and prompt_ok)


def pick(
    rows: Iterable[dict[str, Any]],
    n: int,
    *,
    max_chars: int,
    keep: Callable[[dict[str, Any]], bool] = lambda row: True,
    exclude: Container[str] = (),
    what: str = "rows",
) -> list[dict[str, Any]]:
    """The first n usable rows (in rank order) under max_chars that pass keep and are not excluded."""
    eligible = [
        r
        for r in rows
        if r["id"] not in exclude and usable(r) and total_chars(r) <= max_chars and keep(r)
    ]
    if len(eligible) < n:
        raise ValueError(f"{what}: need {n} rows, only {len(eligible)} meet the selection rules")
    return sorted(eligible, key=lambda r: rank(r["id"]))[:n]


def one_per_category(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The first n usable rows in rank order, at most one per TruthfulQA category."""
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for row in sorted((r for r in rows if usable(r)), key=lambda r: rank(r["id"])):
        if row["category"] not in seen:
            seen.add(row["category"])
            out.append(row)
    if len(out) < n:
        raise ValueError(f"TruthfulQA: need {n} categories, found {len(out)}")
    return out[:n]


def slug(text: str) -> str:
    """A lowercase tag: 'Confusion: People' -> 'confusion-people'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# --------------------------------------------------------------------------- cases


def pair_case(
    case_id: str,
    prompt: list[dict[str, str]],
    chosen: str,
    rejected: str,
    tags: list[str],
    principle: str,
    label: str,
) -> Case:
    """A case with 'chosen' and 'rejected' candidates and the human label that ranks them."""
    return Case.model_validate(
        {
            "id": case_id,
            "prompt": prompt,
            "tags": tags,
            "candidates": [
                {"generator": "chosen", "response": chosen},
                {"generator": "rejected", "response": rejected},
            ],
            "human_preference": {
                "chosen": "chosen",
                "rejected": "rejected",
                "principle": principle,
                "source": label,
            },
        }
    )


def hh_case(row: dict[str, Any], tag: str) -> Case:
    """A case from an HH-RLHF row, tagged with its file and 'multi-turn' when it has several user
    turns.
    """
    tags = [tag, "multi-turn"] if user_turns(row) > 1 else [tag]
    principle = HH_FILES[tag][1]
    return pair_case(
        row["id"], row["prompt"], row["chosen"], row["rejected"], tags, principle, HH_LABEL
    )


def tqa_case(row: dict[str, Any]) -> Case:
    """A case from a TruthfulQA honesty pair (best answer vs best incorrect answer); no reference is
    set.
    """
    tags = ["truthfulqa", slug(row["category"])]
    label = "TruthfulQA author label"
    return pair_case(
        row["id"], row["prompt"], row["chosen"], row["rejected"], tags, "honesty", label
    )


def labelled_pair_case(case_id: str, item: dict[str, Any], tag: str, label: str) -> Case:
    """A case from an LLMBar-format pair: generators output_1 / output_2, `label` names the better
    one.
    """
    if item["label"] not in (1, 2):
        raise ValueError(f"{case_id}: label must be 1 or 2, got {item['label']!r}")
    better, worse = ("output_1", "output_2") if item["label"] == 1 else ("output_2", "output_1")
    return Case.model_validate(
        {
            "id": case_id,
            "prompt": [{"role": "user", "content": item["input"]}],
            "tags": [tag],
            "candidates": [
                {"generator": "output_1", "response": item["output_1"]},
                {"generator": "output_2", "response": item["output_2"]},
            ],
            "human_preference": {
                "chosen": better,
                "rejected": worse,
                "principle": "helpfulness",
                "source": label,
            },
        }
    )


def load_hh(source: Path) -> dict[str, list[dict[str, Any]]]:
    """The HH-RLHF rows of each file, keyed by tag."""
    return {tag: read_jsonl(source / file) for tag, (file, _) in HH_FILES.items()}


def demo_cases(source: Path, hh: dict[str, list[dict[str, Any]]]) -> list[Case]:
    """16 single-turn HH cases per file, 4 multi-turn per file, and 16 TruthfulQA cases (one per
    category).
    """
    cases: list[Case] = []
    for tag, rows in hh.items():
        single = pick(
            rows,
            DEMO_SINGLE_PER_FILE,
            max_chars=DEMO_MAX_CHARS,
            keep=lambda r: user_turns(r) == 1,
            what=tag,
        )
        cases += [hh_case(r, tag) for r in sorted(single, key=lambda r: r["id"])]
    for tag, rows in hh.items():
        multi = pick(
            rows,
            DEMO_MULTI_PER_FILE,
            max_chars=DEMO_MAX_CHARS,
            keep=lambda r: user_turns(r) >= 2,
            what=tag,
        )
        cases += [hh_case(r, tag) for r in sorted(multi, key=lambda r: r["id"])]
    tqa = one_per_category(read_jsonl(source / TQA_FILE), DEMO_TRUTHFULQA)
    cases += [tqa_case(r) for r in sorted(tqa, key=lambda r: r["id"])]
    return cases


def hh_pairs_cases(hh: dict[str, list[dict[str, Any]]], used: set[str]) -> list[Case]:
    """150 HH pairs per file that the demo does not use."""
    cases: list[Case] = []
    for tag, rows in hh.items():
        chosen = pick(rows, META_PER_FILE, max_chars=META_MAX_CHARS, exclude=used, what=tag)
        cases += [hh_case(r, tag) for r in sorted(chosen, key=lambda r: r["id"])]
    return cases


def llmbar_mtbench_cases(source: Path) -> list[Case]:
    """All LLMBar Natural pairs, then all MT-Bench human pairs, ids numbered by position in the
    source.
    """
    natural = read_json(source / LLMBAR_FILE)
    mtbench = read_json(source / MTBENCH_FILE)
    cases = [
        labelled_pair_case(f"llmbar-natural-{i:03d}", item, "llmbar-natural", "LLMBar author label")
        for i, item in enumerate(natural)
    ]
    cases += [
        labelled_pair_case(
            f"mtbench-{i:03d}",
            item,
            "mt-bench",
            "MT-Bench expert human label (lmsys, majority vote)",
        )
        for i, item in enumerate(mtbench)
    ]
    return cases


# --------------------------------------------------------------------------- suites and output


def pair_generators() -> dict[str, dict[str, str]]:
    """Generator descriptions for suites whose candidates are named chosen / rejected."""
    return {
        "chosen": {
            "description": "The reply people preferred: for HH-RLHF the one crowdworkers picked as less harmful "
            "(harmless-base) or more helpful (helpful-base); for TruthfulQA the authors' best true answer."
        },
        "rejected": {
            "description": "The other reply: the one HH-RLHF crowdworkers did not pick, or TruthfulQA's best "
            "incorrect answer."
        },
    }


def suite_record(
    suite_id: str, description: str, generators: dict[str, Any], sources: list[str]
) -> dict[str, Any]:
    """The suite YAML content, in file order, validated against harness.records.Suite."""
    record = {
        "id": suite_id,
        "description": description,
        "constitution": "default",
        "judges": ["student", "rules", "smollm2"],
        "generators": generators,
        "cases_file": f"{suite_id}.cases.jsonl",
        "sources": sources,
    }
    Suite.model_validate(record)
    return record


def suite_yaml(record: dict[str, Any]) -> str:
    """The suite record as YAML text, headed by the editor schema line."""
    body = yaml.safe_dump(record, sort_keys=False, allow_unicode=True, width=110)
    return SCHEMA_LINE + body


def case_record(case: Case) -> dict[str, Any]:
    """A case as a JSON mapping without unset fields (no nulls, no empty human ratings)."""
    record = case.model_dump(mode="json", exclude_none=True)
    for cand in record["candidates"]:
        if not cand.get("human_scores"):
            cand.pop("human_scores", None)
    return record


def cases_jsonl(cases: list[Case]) -> str:
    """One Case JSON object per line; ids must be unique."""
    ids = [c.id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"duplicate case ids: {', '.join(dupes)}")
    lines = [json.dumps(case_record(c), ensure_ascii=False) for c in cases]
    for line in lines:
        Case.model_validate_json(line)
    return "".join(line + "\n" for line in lines)


def write_atomic(path: Path, text: str) -> None:
    """Write text (UTF-8, LF line ends) to path via a temp file in the same folder and
    os.replace.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_files(source: Path) -> dict[str, str]:
    """All output files (name -> text), built and validated in memory."""
    hh = load_hh(source)
    demo = demo_cases(source, hh)
    pairs = hh_pairs_cases(hh, {c.id for c in demo})
    bar = llmbar_mtbench_cases(source)
    hh_sources = [SOURCES["hh-harmless"], SOURCES["hh-helpful"]]
    suites = {
        "demo": (
            suite_record(
                "demo",
                "Small demo built from real human labels: 16 HH-RLHF harmless and 16 helpful single-turn pairs, "
                "8 multi-turn HH dialogues (4 from each file) and 16 TruthfulQA honesty pairs (one per category), "
                f"each under {DEMO_MAX_CHARS} characters. {CONTENT_WARNING}",
                pair_generators(),
                [*hh_sources, SOURCES["truthfulqa"]],
            ),
            demo,
        ),
        "hh_pairs": (
            suite_record(
                "hh_pairs",
                "Meta-evaluation: 150 HH-RLHF harmless and 150 helpful pairs (none from the demo), for measuring "
                f"judge agreement with crowdworker labels. {CONTENT_WARNING}",
                pair_generators(),
                hh_sources,
            ),
            pairs,
        ),
        "llmbar_mtbench": (
            suite_record(
                "llmbar_mtbench",
                "Meta-evaluation: all LLMBar Natural pairs and the MT-Bench expert human pairs, for measuring "
                "judge agreement with human instruction-following labels.",
                {
                    "output_1": {"description": "The first output of the source pair."},
                    "output_2": {"description": "The second output of the source pair."},
                },
                [SOURCES["llmbar-natural"], SOURCES["mt-bench"]],
            ),
            bar,
        ),
    }
    files: dict[str, str] = {}
    for name, (record, cases) in suites.items():
        files[f"{name}.yaml"] = suite_yaml(record)
        files[f"{name}.cases.jsonl"] = cases_jsonl(cases)
    return files


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: build every suite from --source into --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help="shared data folder (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        print(f"error: source data folder not found: {args.source}", file=sys.stderr)
        return 2
    try:
        files = build_files(args.source)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: cannot build suites from {args.source}: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        write_atomic(args.out / name, text)
        print(f"wrote {args.out / name} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
