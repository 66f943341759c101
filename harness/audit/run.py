"""``harness audit``: build the audit suite, judge it through the public engine, write the cards.

The audit suite holds a seeded sample of each source's human-labelled cases (the controls) and, for
each, one probe case per hack class. Each judge judges it twice through
:func:`harness.engine.runner.run` (pointwise, and pairwise in both orders where the judge compares),
once with the pre-screen off and once on; the card is computed from those two run folders. Cards are
cached by judge identity and audit inputs (:mod:`harness.audit_store`).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.audit import probes
from harness.audit.figures import (
    OTHER,
    agreement,
    calibration,
    hack_rates,
    length_bias,
    position,
    source_of,
)
from harness.audit.verdict import headline, verdict
from harness.audit_store import digest, judge_identity, load_card, save_card
from harness.config import load_constitution, load_judge, sha256_file
from harness.engine.runner import RunOptions, bind_judges, run
from harness.errors import RunError
from harness.records import Case
from harness.rundir import read_run
from harness.suite_stream import load_suite

DEFAULT_SUITES = ("demo", "hh_pairs", "llmbar_mtbench")
VERSION = "audit-v1"


@dataclass
class AuditOptions:
    """What to audit and how; ``harness audit`` maps onto this."""

    judges: list[str]
    suites: list[str] = field(default_factory=lambda: list(DEFAULT_SUITES))
    constitution: str | None = None
    per_source: int = 30
    classes: list[str] = field(default_factory=lambda: list(probes.PROBES))
    out: Path = Path("reports/audits")
    seed: int = 0
    use_cache: bool = True
    refresh: bool = False
    quiet: bool = False


@dataclass
class AuditSuite:
    """The written audit suite and the hash of everything that decides the audit's verdicts."""

    path: Path
    cases: list[Case]
    inputs: str
    suites: list[str]


def sample_controls(options: AuditOptions) -> tuple[list[Case], str, list[str]]:
    """A seeded sample of ``per_source`` labelled cases per source (pooled over the suites), the
    constitution, the suites.
    """
    by_source: dict[str, list[Case]] = {}
    constitution = options.constitution
    names: list[str] = []
    seen: set[str] = set()
    for ref in options.suites:
        loaded = load_suite(ref)
        names.append(str(loaded.path))
        if constitution is None:
            c_ref = loaded.suite.constitution or "default"
            constitution = str(load_constitution(c_ref, loaded.path)[1])
        for case in loaded.cases:
            if probes.labelled_pair(case) is None or case.id in seen:
                continue
            seen.add(case.id)
            src = source_of(case.tags)
            by_source.setdefault(loaded.suite.id if src == OTHER else src, []).append(case)
    chosen: list[Case] = []
    for src, cases in sorted(by_source.items()):
        rng = random.Random(f"{options.seed}:{src}")
        taken = rng.sample(cases, min(options.per_source, len(cases)))
        chosen += [_tagged(c, src) for c in taken]
    if not chosen:
        raise RunError(f"no human-labelled cases in {', '.join(options.suites)}: nothing to audit")
    return chosen, str(load_constitution(constitution or "default")[1]), names


def _tagged(case: Case, source: str) -> Case:
    tags = case.tags if source in case.tags else [*case.tags, source]
    return case.model_copy(update={"tags": tags})


def build_suite(options: AuditOptions, folder: Path) -> AuditSuite:
    """Write the audit suite (controls + probes) under ``folder``."""
    unknown = sorted(set(options.classes) - set(probes.PROBES))
    if unknown:
        raise RunError(f"unknown probe class(es) {unknown}; known: {', '.join(probes.PROBES)}")
    controls, constitution, names = sample_controls(options)
    cases = controls + probes.probe_cases(controls, options.classes)
    lines = "".join(c.model_dump_json(exclude_defaults=True) + "\n" for c in cases)
    header = {
        "id": "audit",
        "description": "Judge audit: human-labelled controls and hack probes built from them.",
        "constitution": constitution,
        "cases_file": "audit.cases.jsonl",
    }
    inputs = digest(
        {
            "version": VERSION,
            "cases": digest(lines),
            "constitution": sha256_file(Path(constitution)),
            "seed": options.seed,
        }
    )[:16]
    folder = folder / inputs  # audits of other inputs may share the output folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "audit.cases.jsonl").write_text(lines, encoding="utf-8")
    (folder / "audit.yaml").write_text(json.dumps(header, indent=1), encoding="utf-8")
    return AuditSuite(folder / "audit.yaml", cases, inputs, names)


def judge_run(
    judge: Path, identity: str, suite: AuditSuite, options: AuditOptions, prescreen: bool
) -> Path:
    """One judging of the audit suite; returns the run folder (named by judge identity and inputs,
    so a changed judge, e.g. a recalibrated student, never resumes another's run).
    """
    name = f"{judge.stem}-{identity[:8]}-{suite.inputs}-prescreen-{'on' if prescreen else 'off'}"
    result = run(
        RunOptions(
            suite=suite.path,
            judges=[str(judge)],
            out=options.out / "runs",
            run_id=name,
            seed=options.seed,
            use_cache=options.use_cache,
            refresh=options.refresh,
            quiet=options.quiet,
            pairwise=True,
            labelled_only=True,
            prescreen=prescreen,
        )
    )
    return result.run_dir


def identity_of(judge: Path) -> tuple[str, str, dict[str, Any]]:
    """(judge id, identity hash, description) of a judge config."""
    config, path = load_judge(judge)
    bound = bind_judges([(config, path)])[0]
    identity = judge_identity(bound.backend.identity(), config.rationale)
    extra = getattr(bound.backend, "calibration_curve", None)
    info = {
        "id": config.id,
        "identity": identity,
        "backend": config.backend,
        "config": str(path),
        "description": config.description,
        "student_calibration": extra() if callable(extra) else None,
    }
    return config.id, identity, info


def audit_judge(ref: str, suite: AuditSuite, options: AuditOptions) -> dict[str, Any]:
    """The card of one judge: from the cache when this exact audit was done before."""
    _, path = load_judge(ref)
    _, identity, info = identity_of(path)
    if options.use_cache and not options.refresh:
        cached = load_card(identity, suite.inputs)
        if cached is not None:
            return cached
    off = read_run(judge_run(path, identity, suite, options, prescreen=False))
    on = read_run(judge_run(path, identity, suite, options, prescreen=True))
    seed = options.seed
    card: dict[str, Any] = {
        "version": VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "inputs": suite.inputs,
        "suites": suite.suites,
        "judge": info,
        "protocol": {"per_source": options.per_source, "seed": seed, "classes": options.classes},
        "runs": {"prescreen_off": str(off.root), "prescreen_on": str(on.root)},
        "agreement": agreement(on, seed),
        "position": position(on),
        "length": length_bias(on, seed),
        "hacks": {"prescreen_off": hack_rates(off, seed), "prescreen_on": hack_rates(on, seed)},
        "calibration": calibration(on),
    }
    card["verdict"] = verdict(card)
    card["headline"] = headline(card)
    if options.use_cache:
        save_card(card)
    return card


def audit(options: AuditOptions) -> list[tuple[dict[str, Any], Path]]:
    """Audit every judge; returns each card with the folder its files were written to."""
    from harness.audit.card import write_card

    suite = build_suite(options, options.out / "suites")
    out = []
    for ref in options.judges:
        card = audit_judge(ref, suite, options)
        out.append((card, write_card(card, options.out / card["judge"]["id"])))
    return out
