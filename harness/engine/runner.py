"""A whole run: load inputs, plan, judge (resuming what is done), store, summarise, report.

Spend: each judge's calls cost its configured token prices; an invocation with ``max_cost`` stops
starting new calls once it has spent that much, lets the calls in flight finish and be written, and
leaves the run resumable. The manifest records each invocation (calls, retries by cause, cache hits,
spend) and the spend of the whole run, recomputed from the verdict logs, with generation spend kept
apart from judging.
"""

from __future__ import annotations

import asyncio
import collections
import random
import re
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import pandas as pd

from harness.audit_store import judge_identity, record_audits
from harness.backends.base import backend_class, parse_options
from harness.config import check_labels, load_constitution, load_judge
from harness.credentials import announce, vet
from harness.engine.adaptive import ROUND_CASES, AdaptiveStop
from harness.engine.manifest import fingerprint, new_manifest
from harness.engine.plan import BoundJudge, PairPlan
from harness.engine.session import JudgingSession, RelaxedGC, SessionOptions
from harness.engine.stream import Planner, Survey
from harness.errors import RunError, ValidationFailed
from harness.judging.prescreen import ConstantAnswers
from harness.records import (
    SLUG,
    Constitution,
    JudgeConfig,
    RunManifest,
    Session,
)
from harness.rundir import (
    PAIRS,
    PART_ROWS,
    VERDICTS,
    Record,
    RunWriter,
    case_chunks,
    read_case_index,
    read_run,
    read_table,
    run_spend,
    status_counts,
)
from harness.suite_stream import LoadedSuite, SuiteStream, load_suite, open_suite

DEFAULT_CONSTITUTION = "default"
DEFAULT_JUDGES = ["student", "rules", "smollm2"]
CHUNK_CASES = 1000  # cases planned and judged at a time: memory stays flat in the suite size


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
    trust_suite_judges: bool = False  # let the suite's own judges: read secrets (API keys)
    max_cases: int | None = None  # a seeded sample of this many cases
    executor: str = "local"  # "local" (asyncio in this process) or "ray"
    ray: dict[str, Any] = field(default_factory=dict)  # Ray settings: address, actors, resources
    prescreen: bool = True  # the hack pre-screen (harness.judging.prescreen) answers flagged items


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


S = TypeVar("S", LoadedSuite, SuiteStream)


@dataclass
class Inputs(Generic[S]):
    """Everything loaded for a run: its suite held in memory, or streamed (``harness run``)."""

    suite: S
    constitution: Constitution
    constitution_path: Path
    judges: list[tuple[JudgeConfig, Path]]
    #: Whether the user chose the judges (``--judge`` or the built-in default), not the suite.
    judges_named: bool = True


def load_inputs(options: RunOptions) -> Inputs[LoadedSuite]:
    """Load the suite (its cases held in memory), then the constitution and judges it or the
    options name.
    """
    return _with_suite(load_suite(options.suite), options)


def stream_inputs(options: RunOptions) -> Inputs[SuiteStream]:
    """Validate the suite in one streamed pass, then load the constitution and judges."""
    suite = open_suite(options.suite)
    try:
        return _with_suite(suite, options)
    except BaseException:
        suite.close()
        raise


def _with_suite(suite: S, options: RunOptions) -> Inputs[S]:
    """The inputs of a run of ``suite``: the constitution and judges it or the options name."""
    c_ref = options.constitution or suite.suite.constitution or DEFAULT_CONSTITUTION
    c_rel = None if options.constitution else suite.path
    constitution, c_path = load_constitution(c_ref, c_rel)
    try:
        check_labels(suite, constitution, c_path)
    except ValidationFailed as exc:
        if options.labelled_only:  # the mismatched cases would silently drop out
            raise
        print(f"warning: {exc}", file=sys.stderr)
    refs = options.judges or suite.suite.judges or DEFAULT_JUDGES
    rel = None if options.judges else suite.path
    judges = [load_judge(r, rel) for r in refs]
    ids = [j.id for j, _ in judges]
    if len(set(ids)) != len(ids):
        raise RunError(f"two judges share an id: {ids}")
    return Inputs(
        suite, constitution, c_path, judges, bool(options.judges) or not suite.suite.judges
    )


def bind_judges(
    judges: list[tuple[JudgeConfig, Path]], *, trusted: bool = True
) -> list[BoundJudge]:
    """Instantiate each judge's backend (this is where a missing API key is reported).

    Before a backend reads any secret, the secrets it would send and their hosts are printed; with
    ``trusted`` False (judges a suite named itself) a judge that would read one is refused. Servers
    are then asked for their model's fingerprint, which joins the cache key.
    """
    bound = []
    for config, path in judges:
        cls = backend_class(config.backend)
        options = parse_options(cls, config.options, str(path))
        announce(vet(cls.secret_uses(options, config.id), str(path), trusted))
        bound.append(BoundJudge(config, cls(options, judge=config.id)))
    _probe(bound)
    return bound


def _probe(bound: list[BoundJudge]) -> None:
    """Ask every judge's server for its model fingerprint (skipped inside a running event loop)."""
    try:
        asyncio.get_running_loop()
        return
    except RuntimeError:
        pass

    async def ask() -> None:
        await asyncio.gather(*(b.backend.probe() for b in bound))

    asyncio.run(ask())


def _check_same_run(root: Path, manifest: RunManifest) -> RunManifest:
    """The manifest of the run already in ``root``, if it is a run of the same inputs."""
    old = read_run(root).manifest

    def key(m: RunManifest) -> tuple[object, ...]:
        return (m.suite.sha256, m.constitution.sha256, [j.sha256 for j in m.judges], m.seed,
                m.protocol)  # fmt: skip

    if key(old) != key(manifest):
        raise RunError(f"{root} holds a run of different inputs; choose another --run-id or --out")
    return old


def select_cases(inputs: Inputs[SuiteStream], options: RunOptions) -> None:
    """Apply --max-cases (a seeded sample) and, for --target-ci, a seeded judging order.

    Only case positions are chosen and held; the suite then streams those cases in that order.
    """
    n = inputs.suite.total
    rng = random.Random(options.seed)
    positions: list[int] | None = None
    if options.max_cases is not None and options.max_cases < n:
        positions = sorted(rng.sample(range(n), options.max_cases))
    if options.target_ci is not None:
        positions = list(range(n)) if positions is None else positions
        # an adaptive estimate needs an order unrelated to the cases' content
        rng.shuffle(positions)
    unknown = set(options.principles) - {p.id for p in inputs.constitution.principles}
    if unknown:
        raise RunError(
            f"unknown principle(s) {sorted(unknown)}; the constitution has "
            f"{[p.id for p in inputs.constitution.principles]}"
        )
    if positions is not None:
        inputs.suite.select(positions)


def make_planner(
    inputs: Inputs[SuiteStream], bound: list[BoundJudge], options: RunOptions
) -> Planner:
    """The run's planner: kinds, principles and labelled-only restrictions from the options."""
    labels = dict(inputs.suite.labels()) if options.labelled_only else {}
    if options.pairwise:
        for b in (b for b in bound if not b.backend.pairwise()):
            print(
                f"note: judge {b.config.id} ({b.config.backend}) cannot compare pairs: "
                "--pairwise gives it no pairwise items",
                file=sys.stderr,
            )
    return Planner(
        inputs.constitution,
        bound,
        options.seed,
        pointwise=options.pointwise,
        pairwise=options.pairwise,
        pairs=options.pairs,
        principles=options.principles,
        labels=labels,
    )


def run_folder(out: Path, run_id: str) -> Path:
    """``out/run_id``, refused unless the id is a slug and the folder resolves inside ``out``."""
    if not re.fullmatch(SLUG, run_id):
        raise RunError(
            f"run id {run_id!r}: expected letters, digits, '_', '.' or '-' (at most 128), "
            "starting with a letter or digit"
        )
    folder = out / run_id
    if not folder.resolve().is_relative_to(out.resolve()) or folder.resolve() == out.resolve():
        raise RunError(f"run folder {folder} resolves outside the output folder {out}")
    return folder


def run(options: RunOptions) -> RunResult:
    """Judge a suite; resumes the run folder if it already holds part of this run.

    The folder is locked for the whole call, so a second process on the same run stops at once.
    """
    if options.executor == "ray":  # before any work: say what to install, if Ray is missing
        from harness.engine.ray_executor import import_ray

        import_ray()
    with RelaxedGC():  # validating and copying many cases builds no reference cycles
        inputs = stream_inputs(options)
    with inputs.suite:  # its cases stream from a temporary copy, never all held at once
        return _run(inputs, options)


def _run(inputs: Inputs[SuiteStream], options: RunOptions) -> RunResult:
    select_cases(inputs, options)
    bound = bind_judges(inputs.judges, trusted=inputs.judges_named or options.trust_suite_judges)
    planner = make_planner(inputs, bound, options)
    survey = Survey(planner, ConstantAnswers() if options.prescreen else None)
    cases = survey.watch(inputs.suite.line_chunks(CHUNK_CASES))
    run_id = options.run_id or f"{inputs.suite.suite.id}-{fingerprint(inputs, options)}"
    with RunWriter(run_folder(Path(options.out), run_id)) as writer:
        with RelaxedGC():  # the survey builds no reference cycles either
            if writer.exists():
                collections.deque(cases, maxlen=0)  # the survey only: the folder has its cases
                manifest = new_manifest(inputs, options, survey.total, run_id)
                manifest = _check_same_run(writer.root, manifest)
            else:
                writer.write_inputs(inputs.constitution, cases)
                manifest = new_manifest(inputs, options, survey.total, run_id)
                writer.write_manifest(manifest)
        record_audits(
            [
                (b.config.id, judge_identity(b.backend.identity(), b.config.rationale))
                for b in bound
            ],
            writer.root,
            quiet=options.quiet,
        )
        bound = survey.screened(bound)
        # From here the cases stream from the run folder's own copy, a chunk at a time.
        session, skipped = asyncio.run(
            _judge(writer, inputs, bound, planner, survey.planned, options)
        )
        result = finish(writer, manifest, survey.total - skipped, session=session)
    result.left = session.stopped_items if session else 0
    result.skipped = skipped
    return result


@dataclass
class _Judged:
    """What one invocation did: its manifest record and how many items the budget left."""

    record: Session
    stopped_items: int


async def _judge(
    writer: RunWriter,
    inputs: Inputs,
    bound: list[BoundJudge],
    planner: Planner,
    planned: dict[str, int],
    options: RunOptions,
) -> tuple[_Judged | None, int]:
    """Plan and judge chunk by chunk what the folder does not hold yet; (what it did, skipped)."""
    done = read_table(writer.root, VERDICTS, ["item_id", "judge", "principle", "generator",
                                                "case_id", "normalized", "status"])  # fmt: skip
    pairs = read_table(writer.root, PAIRS, ["item_id", "judge", "status"])
    # Only ids are held (about 100 bytes an item), not records; an error row does not count as
    # finished, so a resume asks again what failed.
    finished = {i for f in (done, pairs) for i, s in zip(f["item_id"], f["status"], strict=True)
                if s != "error"}  # fmt: skip
    left = _left_per_judge(planned, done, pairs)
    if not any(left.values()):
        return None, 0
    stop = _adaptive(planner, writer, done, options)
    sink = _sink(writer, stop)
    size = ROUND_CASES if stop else CHUNK_CASES
    session: JudgingSession | None = None
    async with AsyncExitStack() as stack:
        for chunk in case_chunks(writer.root, size):
            todo = [i for i in planner.items(chunk) if i.item_id not in finished]
            if todo and session is None:  # opened only once there is something to judge
                opened = JudgingSession(
                    bound, inputs.constitution, sink, left, _session_options(options)
                )
                session = await stack.enter_async_context(opened)
            if todo and session is not None:
                await session.judge(todo)
            if writer.unsynced >= PART_ROWS:
                writer.sync()  # keep the Parquet parts close behind the logs
    judged = _Judged(session.record(), session.left) if session else None
    return judged, stop.skipped if stop else 0


def _left_per_judge(
    planned: dict[str, int], done: pd.DataFrame, pairs: pd.DataFrame
) -> dict[str, int]:
    """Items each judge still has to do (planned minus rows already finished), for progress."""
    ok = pd.concat([f[f["status"] != "error"][["judge"]] for f in (done, pairs)])
    have = ok["judge"].value_counts().to_dict()
    return {j: max(0, n - int(have.get(j, 0))) for j, n in planned.items()}


def _adaptive(
    planner: Planner, writer: RunWriter, done: pd.DataFrame, options: RunOptions
) -> AdaptiveStop | None:
    """For --target-ci: the stopping rule, seeded with the verdicts already written."""
    if options.target_ci is None:
        return None
    index = read_case_index(writer.root)
    order = {c: i for i, c in enumerate(index["case_id"])}
    stop = AdaptiveStop(options.target_ci, order)
    stop.seed(done)
    planner.gate = stop.want
    return stop


def _sink(writer: RunWriter, stop: AdaptiveStop | None) -> Callable[[list[Record]], None]:
    """Every record goes to the log at once; adaptive stopping also sees the verdicts."""
    if stop is None:
        return writer.append

    def sink(records: list[Record]) -> None:
        writer.append(records)
        stop.update(records)

    return sink


def _session_options(options: RunOptions) -> SessionOptions:
    return SessionOptions(
        use_cache=options.use_cache,
        cache_path=options.cache_path,
        refresh=options.refresh,
        max_cost=options.max_cost,
        quiet=options.quiet,
        executor=options.executor,
        ray=dict(options.ray),
    )


def finish(
    writer: RunWriter, manifest: RunManifest, n_items: int, session: _Judged | None = None
) -> RunResult:
    """Bring the tables up to date; write the manifest's status, counts, sessions and spend."""
    writer.sync()
    # From the status column, not a frame of Python strings (or item ids: see status_counts).
    tallies = [status_counts(writer.root, log) for log in (VERDICTS, PAIRS)]
    counts = {k: sum(t.get(k, 0) for t in tallies) for k in ("scored", "unscored", "error")}
    complete = sum(sum(t.values()) for t in tallies) >= n_items and counts["error"] == 0
    configs = [JudgeConfig.model_validate(c) for c in manifest.judge_configs]
    sessions = [*manifest.sessions, session.record] if session else manifest.sessions
    update = {
        "status": "complete" if complete else "incomplete",
        "counts": counts,
        "n_items": n_items,
        "sessions": sessions,
        "spend": run_spend(writer.root, configs),
    }
    writer.write_manifest(manifest.model_copy(update=update))
    return RunResult(writer.root, counts, complete, session=session.record if session else None)


def resume(run_dir: Path, **overrides: Any) -> RunResult:
    """Complete an interrupted run from its own manifest."""
    manifest = read_run(run_dir).manifest
    proto: dict[str, Any] = dict(manifest.protocol)
    pairs = PairPlan(**proto.pop("pairs", {}))
    options = RunOptions(
        suite=manifest.suite.path,
        constitution=manifest.constitution.path,
        judges=[j.path for j in manifest.judges],
        out=Path(run_dir).resolve().parent,
        run_id=Path(run_dir).resolve().name,  # the folder named, even if renamed since
        seed=manifest.seed,
        pairs=pairs,
        **proto,
        **overrides,
    )
    return run(options)
