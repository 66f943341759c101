"""A whole run: load inputs, plan, judge (resuming what is done), store, summarise, report.

Spend: each judge's calls cost its configured token prices; an invocation with ``max_cost`` stops starting
new calls once it has spent that much, lets the calls in flight finish and be written, and leaves the run
resumable. The manifest records each invocation (calls, retries by cause, cache hits, spend) and the spend
of the whole run, recomputed from the verdict logs, with generation spend kept apart from judging.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.metadata
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.backends.base import backend_class, parse_options
from harness.config import LoadedSuite, load_constitution, load_judge, load_suite, sha256_file
from harness.engine.adaptive import pending, run_adaptive
from harness.engine.cache import JudgeCache
from harness.engine.executor import execute
from harness.engine.limits import Budget
from harness.engine.plan import BoundJudge, PairPlan, WorkItem, content_hash, plan, plan_pairs
from harness.engine.progress import Progress
from harness.engine.store import PAIRS, VERDICTS, Record, RunStore, read_jsonl_tolerant, read_run
from harness.errors import RunError
from harness.schema import Constitution, InputRecord, JudgeConfig, RunManifest, Session, Spend

DEFAULT_CONSTITUTION = "default"
DEFAULT_JUDGES = ["student", "rules", "smollm2"]
GENERATIONS_LOG = (
    "generations.jsonl"  # written by the generation stages (samples, critiques, revisions)
)
VERSIONED = [
    "constitutional-harness",
    "pydantic",
    "torch",
    "transformers",
    "aiohttp",
    "httpx",
    "pandas",
    "numpy",
]


@dataclass
class RunOptions:
    """What to judge and how; the CLI's ``harness run`` maps onto this."""

    suite: str | Path
    constitution: str | None = None
    judges: list[str] = field(default_factory=list)
    out: Path = Path("reports")
    run_id: str | None = None
    seed: int = 0
    use_cache: bool = True
    refresh: bool = False
    cache_path: Path | None = None
    quiet: bool = False
    report: bool = True
    pointwise: bool = True
    pairwise: bool = False
    pairs: PairPlan = field(default_factory=PairPlan)
    max_cost: float | None = (
        None  # US dollars this invocation may spend on judge calls; None: no cap
    )
    target_ci: float | None = (
        None  # stop a principle × generator once its CI half-width (0..1 scale) is below
    )
    principles: list[str] = field(
        default_factory=list
    )  # judge only these principles (default: all)
    labelled_only: bool = False  # judge a labelled case only on its human label's principle
    max_cases: int | None = None  # a seeded sample of this many cases


@dataclass
class RunResult:
    """Where the run is and how it ended."""

    run_dir: Path
    counts: dict[str, int]
    complete: bool
    session: Session | None = (
        None  # what this invocation did; None when there was nothing left to judge
    )
    left: int = 0  # items not started because the --max-cost budget was reached
    skipped: int = 0  # items never asked because --target-ci stopped their principle × generator


@dataclass
class Inputs:
    """Everything loaded for a run."""

    suite: LoadedSuite
    constitution: Constitution
    constitution_path: Path
    judges: list[tuple[JudgeConfig, Path]]


def load_inputs(options: RunOptions) -> Inputs:
    """Load the suite, then the constitution and judges it or the options name."""
    suite = load_suite(options.suite)
    c_ref = options.constitution or suite.suite.constitution or DEFAULT_CONSTITUTION
    c_rel = None if options.constitution else suite.path
    constitution, c_path = load_constitution(c_ref, c_rel)
    refs = options.judges or suite.suite.judges or DEFAULT_JUDGES
    rel = None if options.judges else suite.path
    judges = [load_judge(r, rel) for r in refs]
    ids = [j.id for j, _ in judges]
    if len(set(ids)) != len(ids):
        raise RunError(f"two judges share an id: {ids}")
    return Inputs(suite, constitution, c_path, judges)


def bind_judges(judges: list[tuple[JudgeConfig, Path]]) -> list[BoundJudge]:
    """Instantiate each judge's backend (this is where a missing API key is reported)."""
    bound = []
    for config, path in judges:
        cls = backend_class(config.backend)
        bound.append(
            BoundJudge(config, cls(parse_options(cls, config.options, str(path)), judge=config.id))
        )
    return bound


def _record(path: Path) -> InputRecord:
    return InputRecord(path=str(path), sha256=sha256_file(path))


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def protocol_of(options: RunOptions) -> dict[str, Any]:
    """The judging protocol, as recorded in the manifest and restored on resume."""
    return {
        "pointwise": options.pointwise,
        "pairwise": options.pairwise,
        "pairs": vars(options.pairs),
        "target_ci": options.target_ci,
        "principles": options.principles,
        "labelled_only": options.labelled_only,
        "max_cases": options.max_cases,
    }


def new_manifest(inputs: Inputs, options: RunOptions, n_items: int, run_id: str) -> RunManifest:
    """The manifest of a new run: inputs with hashes, judge configs (key variable names only), versions."""
    return RunManifest(
        run_id=run_id,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        suite=_record(inputs.suite.path),
        constitution=_record(inputs.constitution_path),
        judges=[_record(p) for _, p in inputs.judges],
        judge_configs=[c.model_dump(exclude={"schema_"}) for c, _ in inputs.judges],
        versions=_versions(),
        seed=options.seed,
        n_items=n_items,
        protocol=protocol_of(options),
        generators=inputs.suite.suite.generators,
    )


def fingerprint(inputs: Inputs, options: RunOptions) -> str:
    """Hash of everything that decides the run's verdicts (so the same command finds the same run)."""
    files = [inputs.constitution_path, *inputs.suite.inputs, *(p for _, p in inputs.judges)]
    return content_hash(
        {
            "files": [sha256_file(p) for p in files],
            "seed": options.seed,
            "protocol": protocol_of(options),
        }
    )[:10]


def _check_same_run(store: RunStore, manifest: RunManifest) -> None:
    old = read_run(store.root).manifest

    def key(m: RunManifest) -> tuple[object, ...]:
        return (
            m.suite.sha256,
            m.constitution.sha256,
            [j.sha256 for j in m.judges],
            m.seed,
            m.protocol,
        )

    if key(old) != key(manifest):
        raise RunError(
            f"{store.root} holds a run of different inputs; choose another --run-id or --out"
        )


async def _judge(
    items: list[WorkItem],
    bound: list[BoundJudge],
    inputs: Inputs,
    store: RunStore,
    options: RunOptions,
    done: dict[str, Record],
    planned: list[WorkItem],
) -> tuple[Session, int, int]:
    """Judge ``items``; returns the invocation's record, items the budget left unstarted, and items
    adaptive stopping skipped."""
    cache = JudgeCache(options.cache_path) if options.use_cache else None
    totals = {b.config.id: sum(i.judge == b.config.id for i in items) for b in bound}
    progress = Progress(
        totals, quiet=options.quiet, priced={b.config.id: b.config.priced for b in bound}
    )
    budget = Budget(options.max_cost)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    clock = time.monotonic()
    skipped = 0

    async def run_items(batch: list[WorkItem], sink: Callable[[list[Record]], None]) -> int:
        return await execute(
            batch,
            bound,
            inputs.constitution,
            cache,
            sink,
            progress,
            refresh=options.refresh,
            budget=budget,
        )

    try:
        if options.target_ci is None:
            left = await run_items(items, store.append)
        else:
            order = {c.id: i for i, c in enumerate(inputs.suite.cases)}
            pointwise = [
                i for i in planned if i.kind == "pointwise"
            ]  # all of them: done ones count too
            left, skipped = await run_adaptive(
                pointwise, order, done, options.target_ci, run_items, store.append
            )
            if not left:
                left = await run_items([i for i in items if i.kind != "pointwise"], store.append)
    finally:
        store.close()
        sizes = {b.config.id: b.backend.size() for b in bound}
        for b in bound:
            await b.backend.aclose()
        if cache is not None:
            cache.close()
    session = session_record(
        progress, started, time.monotonic() - clock, options.max_cost, left, sizes
    )
    return session, left, skipped


def session_record(
    progress: Progress,
    started: str,
    elapsed: float,
    max_cost: float | None,
    left: int,
    sizes: dict[str, dict[str, int]] | None = None,
) -> Session:
    """The manifest's record of one invocation, from its progress counts and the judges' parameter counts."""
    stopped = f"--max-cost {max_cost:g} reached; {left} items not started" if left else ""
    sizes = sizes or {}
    return Session(
        started=started,
        elapsed_s=round(elapsed, 3),
        judges={
            j: t.usage().model_copy(update=sizes.get(j, {})) for j, t in progress.tally.items()
        },
        generation_spend_usd=round(progress.generation_spend, 6),
        spend_usd=round(progress.spend, 6),
        max_cost_usd=max_cost,
        stopped=stopped,
    )


def _warn_unpriced(bound: list[BoundJudge], max_cost: float | None) -> None:
    """A budget cannot count what has no price: say so rather than stop too late in silence."""
    free = [b.config.id for b in bound if not b.config.priced and b.backend.name == "openai"]
    if max_cost is not None and free:
        print(
            f"warning: --max-cost counts no spend for judge(s) {', '.join(free)}: they set no "
            "price_per_million_input / price_per_million_output",
            file=sys.stderr,
        )


def run_spend(root: Path, configs: list[JudgeConfig]) -> Spend:
    """Spend of a whole run from its logs: tokens of every paid row (cache hits are free) × the config's prices.

    Every row counts, superseded ones too (an error later redone was still paid for). Generated texts
    (``generations.jsonl``) count as generation spend, apart from judging.
    """
    by_id = {c.id: c for c in configs}
    judged = _paid_tokens(root, (VERDICTS, PAIRS), by_id)
    generated = _paid_tokens(root, (GENERATIONS_LOG,), by_id)
    judges = {c.id: round(c.cost(*judged[c.id]), 6) if c.priced else None for c in configs}
    generation = round(sum(by_id[j].cost(*tokens) for j, tokens in generated.items()), 6)
    total = sum(v for v in judges.values() if v is not None) + generation
    return Spend(judges=judges, generation=generation, total=round(total, 6))


def _paid_tokens(
    root: Path, logs: tuple[str, ...], configs: dict[str, JudgeConfig]
) -> dict[str, tuple[int, int]]:
    """(tokens in, tokens out) per config id over the rows of ``logs`` that were not cache hits."""
    tokens = {cid: [0, 0] for cid in configs}
    for name in logs:
        for row in read_jsonl_tolerant(root / name)[0]:
            if not row.get("cached") and row.get("judge") in tokens:
                pair = tokens[row["judge"]]
                pair[0] += int(row.get("tokens_in") or 0)
                pair[1] += int(row.get("tokens_out") or 0)
    return {cid: (t[0], t[1]) for cid, t in tokens.items()}


def plan_all(inputs: Inputs, bound: list[BoundJudge], options: RunOptions) -> list[WorkItem]:
    """Pointwise and/or pairwise items, as the options ask, restricted to the chosen principles."""
    cases = inputs.suite.cases
    items = plan(cases, inputs.constitution, bound, options.seed) if options.pointwise else []
    if options.pairwise:
        items += plan_pairs(cases, inputs.constitution, bound, options.pairs, options.seed)
    wanted = set(options.principles)
    labels = {c.id: c.human_preference.principle for c in cases if c.human_preference}
    return [
        i
        for i in items
        if (not wanted or i.principle in wanted)
        and not (options.labelled_only and labels.get(i.case_id) not in (None, i.principle))
    ]


def select_cases(inputs: Inputs, options: RunOptions) -> None:
    """Apply --max-cases (a seeded sample) and, for --target-ci, a seeded judging order, in place."""
    cases = list(inputs.suite.cases)
    rng = random.Random(options.seed)
    if options.max_cases is not None and options.max_cases < len(cases):
        keep = set(rng.sample(range(len(cases)), options.max_cases))
        cases = [c for i, c in enumerate(cases) if i in keep]
    if options.target_ci is not None:
        rng.shuffle(cases)  # an adaptive estimate needs an order unrelated to the cases' content
    unknown = set(options.principles) - {p.id for p in inputs.constitution.principles}
    if unknown:
        raise RunError(
            f"unknown principle(s) {sorted(unknown)}; the constitution has "
            f"{[p.id for p in inputs.constitution.principles]}"
        )
    inputs.suite.cases = cases


def run(options: RunOptions) -> RunResult:
    """Judge a suite; resumes the run folder if it already holds part of this run."""
    inputs = load_inputs(options)
    select_cases(inputs, options)
    bound = bind_judges(inputs.judges)
    items = plan_all(inputs, bound, options)
    run_id = options.run_id or f"{inputs.suite.suite.id}-{fingerprint(inputs, options)}"
    store = RunStore(Path(options.out) / run_id)
    manifest = new_manifest(inputs, options, len(items), run_id)
    if store.exists():
        _check_same_run(store, manifest)
        manifest = read_run(store.root).manifest
    else:
        store.initialise(manifest, inputs.constitution, inputs.suite.cases)
    done = store.done_items()
    todo = [i for i in items if i.item_id not in done or done[i.item_id].status == "error"]
    skipped = 0
    if options.target_ci is not None:  # judge only what the groups still open need
        order = {c.id: i for i, c in enumerate(inputs.suite.cases)}
        point = [i for i in items if i.kind == "pointwise"]
        open_items = pending(point, order, done, options.target_ci)
        skipped = sum(1 for i in point if i.item_id not in done) - len(open_items)
        todo = open_items + [i for i in todo if i.kind != "pointwise"]
    session, left = None, 0
    if todo:
        _warn_unpriced(bound, options.max_cost)
        session, left, skipped = asyncio.run(
            _judge(todo, bound, inputs, store, options, done, items)
        )
    result = finish(store, manifest, len(items) - skipped, options.report, session=session)
    result.left, result.skipped = left, skipped
    return result


def finish(
    store: RunStore,
    manifest: RunManifest,
    n_items: int,
    report: bool = True,
    session: Session | None = None,
) -> RunResult:
    """Write the table, the manifest's final status, its record of this invocation and spend, and the report."""
    store.write_parquet()
    done = store.done_items().values()
    counts = {k: sum(r.status == k for r in done) for k in ("scored", "unscored", "error")}
    complete = len(done) == n_items and counts["error"] == 0
    configs = [JudgeConfig.model_validate(c) for c in manifest.judge_configs]
    sessions = [*manifest.sessions, session] if session is not None else manifest.sessions
    manifest = manifest.model_copy(
        update={
            "status": "complete" if complete else "incomplete",
            "counts": counts,
            "n_items": n_items,
            "sessions": sessions,
            "spend": run_spend(store.root, configs),
        }
    )
    store.write_manifest(manifest)
    if report:
        from harness.report.render import render_report

        render_report(store.root)
    return RunResult(store.root, counts, complete, session=session)


def resume(run_dir: Path, **overrides: Any) -> RunResult:
    """Complete an interrupted run from its own manifest."""
    manifest = read_run(run_dir).manifest
    proto: dict[str, Any] = dict(manifest.protocol)
    pairs = PairPlan(**proto.pop("pairs", {}))
    options = RunOptions(
        suite=manifest.suite.path,
        constitution=manifest.constitution.path,
        judges=[j.path for j in manifest.judges],
        out=Path(run_dir).parent,
        run_id=manifest.run_id,
        seed=manifest.seed,
        pairs=pairs,
        **proto,
        **overrides,
    )
    return run(options)
