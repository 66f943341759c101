"""Critique → revision on a finished run, and sampling of new candidates from generator models.

Critique and revision run as phases (a revision needs its critique), each phase a set of independent
work items through the normal executor. Everything lands in ``RUN/revision/``: ``generations.jsonl``
(critiques and revisions), ``pairwise.jsonl`` (optional re-judging of revised against original, both
orders), and a tidy ``RUN/revisions.jsonl`` with one row per revised (case, candidate, principle),
which the preference export turns into (revised, original) pairs.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

from harness.analysis.pairwise import combine_orders
from harness.backends.base import BackendRequest
from harness.config import load_judge
from harness.engine.plan import (
    BoundJudge,
    PairPlan,
    WorkItem,
    cache_identity,
    make_item,
    plan_pairs,
)
from harness.engine.runner import bind_judges
from harness.engine.session import SessionOptions, judge_once
from harness.errors import ConfigError
from harness.judging import revision as prompts
from harness.records import Candidate, Case, Constitution, Generation
from harness.rundir import (
    GENERATIONS,
    RunData,
    RunWriter,
    latest_status,
    read_jsonl_tolerant,
    read_records,
    read_run,
    write_atomic,
)

REVISIONS = "revisions.jsonl"


@dataclass
class ReviseOptions:
    """What to critique and revise, and with which models."""

    run_dir: Path
    critic: str
    reviser: str | None = None
    principles: list[str] = field(default_factory=list)
    only_failing: bool = True
    confirm: bool = False
    use_cache: bool = True
    quiet: bool = False


@dataclass(frozen=True)
class Target:
    """One (case, candidate, principle) to critique and revise."""

    case: Case
    candidate: Candidate
    principle: str


def targets(run: RunData, principles: list[str], only_failing: bool) -> list[Target]:
    """Candidates to revise: those failing a principle under any judge, or all of them."""
    wanted = principles or [p.id for p in run.constitution.principles]
    unknown = set(wanted) - {p.id for p in run.constitution.principles}
    if unknown:
        raise ConfigError(f"unknown principle(s) {sorted(unknown)} for the run's constitution")
    v = run.verdicts
    failed = v[v["passed"].eq(False)]  # scored and below the threshold (unscored rows hold None)
    failing = set(zip(failed["case_id"], failed["generator"], failed["principle"], strict=True))
    return [
        Target(case, cand, pid)
        for case in run.cases
        for cand in case.candidates
        for pid in wanted
        if not only_failing or (case.id, cand.generator, pid) in failing
    ]


def _gen_items(
    judge: BoundJudge, step: str, reqs: list[tuple[Target, BackendRequest]]
) -> list[WorkItem]:
    identity = cache_identity(judge.backend)
    return [
        make_item(
            judge.config.id,
            identity,
            t.case.id,
            t.candidate.generator,
            t.principle,
            r,
            prompts.TEMPLATE_VERSION,
            step=step,
        )
        for t, r in reqs
    ]


def _run_phase(
    items: list[WorkItem],
    judge: BoundJudge,
    constitution: Constitution,
    store: RunWriter,
    options: ReviseOptions,
) -> None:
    status = latest_status(store.root)
    todo = [i for i in items if status.get(i.item_id, "error") == "error"]
    if todo:
        opts = SessionOptions(use_cache=options.use_cache, quiet=options.quiet)
        totals = {judge.config.id: len(todo)}
        asyncio.run(judge_once(todo, [judge], constitution, store.append, totals, opts))


def _texts(store: RunWriter, step: str) -> dict[tuple[str, str, str], Generation]:
    gens = [
        g
        for g in read_records(store.root, GENERATIONS).values()
        if isinstance(g, Generation) and g.step == step
    ]
    return {(g.case_id, g.generator, g.principle): g for g in gens}


def revise(options: ReviseOptions) -> Path:
    """Critique, revise and optionally re-judge; returns the path of revisions.jsonl."""
    run = read_run(options.run_dir)
    critic = bind_judges([load_judge(options.critic)])[0]
    reviser = bind_judges([load_judge(options.reviser)])[0] if options.reviser else critic
    chosen = targets(run, options.principles, options.only_failing)
    with RunWriter(Path(options.run_dir) / "revision") as store:
        return _revise(options, run, critic, reviser, chosen, store)


def _revise(
    options: ReviseOptions,
    run: RunData,
    critic: BoundJudge,
    reviser: BoundJudge,
    chosen: list[Target],
    store: RunWriter,
) -> Path:
    principle = run.constitution.principle
    critique_reqs = [
        (t, prompts.critique_request(principle(t.principle), t.case, t.candidate)) for t in chosen
    ]
    _run_phase(
        _gen_items(critic, "critique", critique_reqs), critic, run.constitution, store, options
    )
    critiques = _texts(store, "critique")
    ready = [t for t in chosen if _ok(critiques.get(_key(t)))]
    revision_reqs = [
        (
            t,
            prompts.revision_request(
                principle(t.principle), t.case, t.candidate, critiques[_key(t)].text
            ),
        )
        for t in ready
    ]
    _run_phase(
        _gen_items(reviser, "revision", revision_reqs), reviser, run.constitution, store, options
    )
    revisions = _texts(store, "revision")
    if options.confirm:
        _confirm(ready, revisions, critic, run.constitution, store, options)
    return _write_revisions(run, chosen, critiques, revisions, store, critic, reviser)


def _key(t: Target) -> tuple[str, str, str]:
    return (t.case.id, t.candidate.generator, t.principle)


def _ok(gen: Generation | None) -> bool:
    return gen is not None and gen.status == "scored" and bool(gen.text.strip())


REVISED = "+revised"


def _confirm(
    ready: list[Target],
    revisions: dict[tuple[str, str, str], Generation],
    judge: BoundJudge,
    constitution: Constitution,
    store: RunWriter,
    options: ReviseOptions,
) -> None:
    """Judge revised against original on the revised principle, in both orders."""
    items: list[WorkItem] = []
    for t in ready:
        rev = revisions.get(_key(t))
        if not _ok(rev) or not judge.backend.pairwise():
            continue
        assert rev is not None
        mini = t.case.model_copy(
            update={
                "candidates": [
                    t.candidate,
                    Candidate(generator=t.candidate.generator + REVISED, response=rev.text.strip()),
                ]
            }
        )
        one = Constitution(id=constitution.id, principles=[constitution.principle(t.principle)])
        items += plan_pairs([mini], one, [judge], PairPlan())
    _run_phase(items, judge, constitution, store, options)


def _confirmations(store: RunWriter) -> dict[tuple[str, str, str], float]:
    """P(revised better) per (case, original generator, principle), from the confirmation judgments."""
    rows = read_jsonl_tolerant(store.root / "pairwise.jsonl")[0]
    if not rows:
        return {}
    import pandas as pd

    combined = combine_orders(pd.DataFrame(rows))
    out = {}
    for r in combined.itertuples():
        rev_is_a = str(r.a).endswith(REVISED)
        original = str(r.b if rev_is_a else r.a)
        out[(str(r.case_id), original, str(r.principle))] = float(r.p_a if rev_is_a else 1 - r.p_a)
    return out


def _write_revisions(
    run: RunData,
    chosen: list[Target],
    critiques: dict,
    revisions: dict,
    store: RunWriter,
    critic: BoundJudge,
    reviser: BoundJudge,
) -> Path:
    confirmed = _confirmations(store)
    lines = []
    for t in chosen:
        crit, rev = critiques.get(_key(t)), revisions.get(_key(t))
        p = confirmed.get(_key(t))
        ok = (
            _ok(crit)
            and rev is not None
            and _ok(rev)
            and rev.text.strip() != t.candidate.response.strip()
        )
        lines.append(
            json.dumps(
                {
                    "case_id": t.case.id,
                    "generator": t.candidate.generator,
                    "principle": t.principle,
                    "judge": critic.config.id,
                    "reviser": reviser.config.id,
                    "original": t.candidate.response,
                    "critique": crit.text.strip() if crit else "",
                    "revision": rev.text.strip() if rev else "",
                    "status": "ok" if ok else "failed",
                    "reason": _why(crit, rev, ok),
                    "p_revised_better": p,
                    "confirmed": None if p is None else p > 0.5,
                },
                ensure_ascii=False,
            )
        )
    path = Path(run.root) / REVISIONS
    write_atomic(path, "".join(line + "\n" for line in lines))
    return path


def _why(crit: Generation | None, rev: Generation | None, ok: bool) -> str:
    if ok:
        return ""
    if not _ok(crit):
        return f"no critique: {crit.reason if crit else 'not run'}"
    if not _ok(rev):
        return f"no revision: {rev.reason if rev else 'not run'}"
    return "the revision repeats the original"
