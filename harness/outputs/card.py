"""The dataset card (README.md) of a preference export, in the Hugging Face style.

The YAML header lists ``configs`` (so ``datasets.load_dataset(DIR)`` finds the files, one config per
table),
``dataset_info`` features (so an all-null column keeps its type even from JSONL), the licence of the
source suite's data when its ``sources`` name one, and tags. The body gives the counts, every policy
with what it dropped, the label definitions, the columns, and the run, constitution and judges with
their hashes.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from harness.rundir import RunData
from harness.safetext import md_code

LICENCES = [  # SPDX-style ids the Hub knows, and how suite `sources` lines name them
    ("mit", r"\bMIT\b"),
    ("apache-2.0", r"\bApache[- ](License[, ]*)?(version )?2\.0\b"),
    ("cc-by-sa-4.0", r"\bCC[- ]BY[- ]SA[- ]4\.0\b"),
    ("cc-by-nc-4.0", r"\bCC[- ]BY[- ]NC[- ]4\.0\b"),
    ("cc-by-4.0", r"\bCC[- ]BY[- ]4\.0\b"),
    ("cc0-1.0", r"\bCC0\b"),
    ("bsd-3-clause", r"\bBSD[- ]3"),
]
TAGS = [
    "preference",
    "rlaif",
    "ai-feedback",
    "constitutional-ai",
    "dpo",
    "reward-modeling",
    "trl",
    "synthetic",
]
DEFINITIONS = """\
- **soft_label** = P(chosen is better), always ≥ 0.5 (null for a revision pair that was not re-judged).
  Per principle (`label_<principle>`, oriented to *chosen*): for `pairwise` pairs, the judge's P(better)
  averaged over the orders judged (ties count half); for `pointwise` pairs, P(X > Y) + P(X = Y)/2 from the two
  verdicts' score distributions when both have one, else 1, 0 or 0.5 as chosen's score is higher, lower or
  equal; for `revision` pairs, the re-judged `p_revised_better` when present. The *overall* label is the mean
  of the per-principle labels weighted by the principles' weights, over the principles that were scored.
- **margin** = |2p − 1| = 2·soft_label − 1, in [0, 1]: 0 is a tie, 1 a certain preference.
- **score_margin** (pointwise scores only) = chosen's minus rejected's score on the deciding label: the rubric
  score for one principle, the weighted mean normalized (0..1) score for `overall`.
- **chosen** is the side the deciding label favours; a kept tie is oriented by generator name.
- **position_consistent**: false when the judge's verdict flipped with the order shown on any principle in the
  label, true when every principle judged in both orders agreed, null when none was judged in both orders.
- **prompt** (standard format): a single user turn is its text as is; a conversation is rendered as a transcript,
  one paragraph per turn (`Human: …`, `Assistant: …`, `System: …`), separated by blank lines and ending with
  `Assistant: ` so prompt + response reads on. The conversational format keeps the messages as they are."""
COLUMNS = {
    "prompt, chosen, rejected": "TRL's preference columns (strings, or message lists in `conversational`)",
    "run_id, case_id": "the run and the case (prompt) the pair comes from",
    "source": "`pairwise`, `pointwise` or `revision` (see the definitions)",
    "judge, reviser": "the judge whose labels decided (for revisions, the critic) and the reviser model",
    "chosen_generator, rejected_generator": "who produced each response; a revision is named "
    "`<generator>+revision(<reviser>)`",
    "decided_by": "the label that decided chosen/rejected: `overall` or a principle id",
    "soft_label, margin, score_margin, position_consistent": "see the definitions",
    "n_principles": "how many principles entered the deciding label",
    "label_<principle>": "P(chosen better) on that principle; null where it was not scored",
    "score_chosen_<principle>, score_rejected_<principle>": "pointwise rubric scores, when the judge gave them",
    "rationale": "the judge's rationales, one line per verdict: `[principle, who] text`",
    "critique": "the critique a revision answered (revision pairs only)",
}


def render_card(run: RunData, summary: dict[str, Any], schemas: dict[str, pa.Schema]) -> str:
    """README.md text: YAML metadata, then the human-readable card."""
    suite = suite_info(run, summary["suite"])
    meta = metadata(summary, schemas, suite["licence"])
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{header}---\n\n{body(run, summary, suite)}"


# --------------------------------------------------------------------------- YAML metadata


def metadata(
    summary: dict[str, Any],
    schemas: dict[str, pa.Schema],
    licence: str | list[str],
) -> dict[str, Any]:
    """The card's YAML header."""
    files = config_files(summary["formats"])
    configs: list[dict[str, Any]] = [
        {"config_name": name, "data_files": [{"split": "train", "path": path}]}
        for name, path in files.items()
    ]
    configs[0]["default"] = True
    kept = summary["counts"]["kept"]
    return {
        "license": licence,
        "pretty_name": f"Preference pairs from run {summary['run_id']}",
        "tags": TAGS,
        "task_categories": ["text-generation"],
        "size_categories": [size_category(kept)],
        "configs": configs,
        "dataset_info": [
            {"config_name": name, "features": features(schemas[name])} for name in files
        ],
    }


def config_files(formats: list[str]) -> dict[str, str]:
    """One config per table, the Parquet file where written (else the JSONL); the first is the
    default.
    """
    files = {}
    for name in ("conversational", "standard"):
        found = [f for f in (f"{name}.parquet", f"{name}.jsonl") if f in formats]
        if found:
            files[name] = found[0]
    files["candidates"] = "candidates.parquet"
    return files


def size_category(n: int) -> str:
    """The Hugging Face ``size_categories`` bucket of ``n`` rows."""
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < limit:
            return label
    return "n>1M"


def features(schema: pa.Schema) -> list[dict[str, Any]]:
    """``datasets`` feature declarations for an Arrow schema of strings, numbers, bools and message
    lists.
    """
    return [_feature(f.name, f.type) for f in schema]


def _feature(name: str, dtype: pa.DataType) -> dict[str, Any]:
    if pa.types.is_list(dtype):
        return {"name": name, "list": [_feature(f.name, f.type) for f in dtype.value_type]}
    names = {
        pa.string(): "string",
        pa.float64(): "float64",
        pa.int64(): "int64",
        pa.bool_(): "bool",
    }
    return {"name": name, "dtype": names[dtype]}


# --------------------------------------------------------------------------- source suite and
# licence


def suite_info(run: RunData, record: dict[str, str]) -> dict[str, Any]:
    """The suite's id, description and sources, read from its file when it is still there and
    unchanged.
    """
    info: dict[str, Any] = {
        "id": "",
        "description": "",
        "sources": [],
        "licence": "other",
        "note": "",
    }
    path = _find(Path(record["path"]), run.root)
    if path is None:
        info["note"] = f"suite file {record['path']} not found: licence unknown"
        return info
    if hashlib.sha256(path.read_bytes()).hexdigest() != record["sha256"]:
        info["note"] = f"suite file {path} changed since the run: licence not taken from it"
        return info
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    sources = [str(s) for s in data.get("sources") or []]
    info.update(
        id=str(data.get("id", "")),
        description=str(data.get("description", "")),
        sources=sources,
        licence=licence_of(sources),
    )
    return info


def _find(path: Path, run_root: Path) -> Path | None:
    """The suite file as recorded (relative to where the run was started, often the project root)."""
    for candidate in (path, run_root.parent.parent / path, run_root.parent / path):
        if candidate.is_file():
            return candidate
    return None


def licence_of(sources: list[str]) -> str | list[str]:
    """The licence id(s) the sources name; 'other' for a source that names none, or when there are
    none.
    """
    found: list[str] = []
    for source in sources:
        ids = [lid for lid, pattern in LICENCES if re.search(pattern, source)] or ["other"]
        found += [i for i in ids if i not in found]
    if not found:
        return "other"
    return found[0] if len(found) == 1 else sorted(found, key=lambda i: (i == "other", i))


# --------------------------------------------------------------------------- body


def body(run: RunData, summary: dict[str, Any], suite: dict[str, Any]) -> str:
    """The Markdown card."""
    parts = [
        f"# Preference pairs from run {md_code(summary['run_id'])}\n\n{_intro(summary, suite)}",
        f"## Files\n\n{_files(summary)}",
        f"## Counts\n\n{_counts(summary)}",
        f"## Policies\n\n{_policies(summary)}",
        f"## Labels\n\n{DEFINITIONS}",
        "## Columns\n\n" + "\n".join(f"- `{k}`: {v}" for k, v in COLUMNS.items()),
        f"## Constitution\n\n{_constitution(run, summary)}",
        f"## Judges\n\n{_judges(summary)}",
        f"## Source suite\n\n{_suite(summary, suite)}",
        f"## Reproduce\n\n```\n{command(summary)}\n```",
    ]
    return "\n\n".join(parts) + "\n"


def _intro(summary: dict[str, Any], suite: dict[str, Any]) -> str:
    judge = (
        f"judge `{summary['judge']}` ({summary['source']} judgments)"
        if summary["judge"]
        else "no judge"
    )
    status = (
        "" if summary["run_status"] == "complete" else f" The run is **{summary['run_status']}**."
    )
    return (
        f"{summary['counts']['kept']} preference pairs built by `harness export preferences` from run "
        f"{md_code(summary['run_id'])} of suite {md_code(suite['id'] or summary['suite']['path'])}, "
        f"judged against constitution {md_code(summary['constitution']['id'])} by {judge}.{status} "
        "The labels are AI feedback: they "
        "are only as good as the judge, whose position bias and agreement with human labels the run's report "
        "shows."
    )


def _files(summary: dict[str, Any]) -> str:
    rows = [f"| `{f}` | TRL {f.split('.')[0]} preference format |" for f in summary["formats"]]
    rows.append(
        f"| `candidates.parquet`, `candidates.jsonl` | all {summary['candidates']} candidates with scores, "
        "win rates and rank per case (no policy applied) |"
    )
    rows.append("| `export.json` | counts, options and provenance as data |")
    return "| file | contents |\n|---|---|\n" + "\n".join(rows)


def _counts(summary: dict[str, Any]) -> str:
    c = summary["counts"]
    lines = ["| step | pairs |", "|---|---:|", f"| considered | {c['considered']} |"]
    lines += [f"| · from {s} | {n} |" for s, n in c["considered_by_source"].items() if n]
    lines += [
        f"| dropped: {step} ({_cell(summary['policy_steps'][step])}) | {n} |"
        for step, n in c["dropped"].items()
    ]
    lines.append(f"| **kept** | **{c['kept']}** |")
    lines += [f"| · from {s} | {n} |" for s, n in c["kept_by_source"].items() if n]
    note = "Each step sees only the pairs the steps above it kept, so considered = dropped + kept."
    return "\n".join(lines) + "\n\n" + note


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


def _policies(summary: dict[str, Any]) -> str:
    o = summary["options"]
    return "\n".join(
        [
            f"- `--principle {o['principle']}`: the label that decides chosen/rejected.",
            f"- `--ties {o['ties']}` with `--tie-band {o['tie_band']}`: a tie is |p − 0.5| ≤ the band "
            "(0 means exactly 0.5, up to float rounding of 1e-9).",
            f"- `--min-margin {o['min_margin']}`: pairs with a smaller margin are dropped.",
            f"- `--inconsistent {o['inconsistent']}`: what to do with position-inconsistent pairs.",
            f"- `--unscored {o['unscored']}`: `drop` drops a pair with an unscored or error verdict on a principle the "
            "label needs; `skip-principle` computes the overall label over the scored principles. With `--principle ID`"
            " only that principle counts. A pairwise principle counts as scored only when every order judged was scored.",
            f"- `--judge {o['judge'] or '(auto)'}`, `--source {o['source']}`: labels come from one judge only "
            f"(here `{summary['judge']}`), from its pairwise judgments when it has them.",
            f"- revisions: {'included' if o['revisions'] else 'left out (`--no-revisions`)'}.",
        ]
    )


def _constitution(run: RunData, summary: dict[str, Any]) -> str:
    c = summary["constitution"]
    rows = [
        f"| `{p.id}` | {p.weight:g} | {_cell(p.statement)} |" for p in run.constitution.principles
    ]
    return (
        f"`{c['id']}` from `{c['path']}`, sha256 `{c['sha256']}`.\n\n| principle | weight | statement |\n"
        "|---|---:|---|\n" + "\n".join(rows)
    )


def _judges(summary: dict[str, Any]) -> str:
    rows = [
        f"| `{j['id']}`{' (labels)' if j['id'] == summary['judge'] else ''} | {j['backend']} | `{j['path']}` | "
        f"`{j['sha256']}` |"
        for j in summary["judges"]
    ]
    return "| judge | backend | config | config sha256 |\n|---|---|---|---|\n" + "\n".join(rows)


def _suite(summary: dict[str, Any], suite: dict[str, Any]) -> str:
    s = summary["suite"]
    lines = [
        f"`{suite['id'] or '?'}` from `{s['path']}`, sha256 `{s['sha256']}`. {suite['description']}".strip()
    ]
    lines += [f"- {src}" for src in suite["sources"]]
    licence = suite["licence"] if isinstance(suite["licence"], str) else ", ".join(suite["licence"])
    lines.append(f"\nLicence: {licence} (from the suite's sources). {suite['note']}".rstrip())
    return "\n".join(lines)


def command(summary: dict[str, Any]) -> str:
    """The command line that rebuilds this export."""
    o = summary["options"]
    parts = [
        "harness export preferences",
        summary["run_dir"],
        "--output DIR",
        f"--principle {o['principle']}",
        f"--ties {o['ties']}",
        f"--tie-band {o['tie_band']}",
        f"--min-margin {o['min_margin']}",
        f"--inconsistent {o['inconsistent']}",
        f"--unscored {o['unscored']}",
        f"--source {o['source']}",
    ]
    parts += [f"--judge {o['judge']}"] if o["judge"] else []
    parts += [] if o["revisions"] else ["--no-revisions"]
    parts += [f"--format {f}" for f in summary["formats"]] if len(summary["formats"]) < 4 else []
    return " ".join(parts)
