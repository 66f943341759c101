"""pytest plugin: judge responses against principles inside tests, and run suite files as tests.

1. :func:`assert_principle` (also a fixture of the same name that honours ``--harness-cache``)
   judges one response against one principle through the normal engine path (load the judge, bind
   its backend, plan, execute) and raises ``AssertionError`` with the score, the threshold and the
   judge's rationale when the score is below the threshold.
2. Files named ``*.suite.yaml``, and suites named by ``--harness-suite PATH`` or the
``harness_suites`` ini
   option, are collected as tests: one test per case × candidate × principle (× judge when there are
   several), failing below the principle's pass threshold with the rationale in the message. Judges
   come
   from ``--harness-judge`` / the ``harness_judge`` ini option, else the suite, else the harness
   defaults.
   All selected tests of a file are judged in one engine batch when the first of them runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from harness.engine.plan import BoundJudge, WorkItem
    from harness.engine.runner import Inputs
    from harness.records import Constitution, Principle, Verdict

SUITE_SUFFIX = ".suite.yaml"
SUITES_KEY = pytest.StashKey[set[Path]]()


class JudgeFailure(AssertionError):
    """A response scored below its principle's threshold, or could not be scored."""


# --------------------------------------------------------------------------- judging


def _run_async(make: Any) -> Any:
    """Run a coroutine to completion, also from inside a running event loop (async tests)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def judge_items(
    items: list[WorkItem],
    bound: list[BoundJudge],
    constitution: Constitution,
    *,
    cache: bool | Path = False,
) -> dict[str, Verdict]:
    """Judge work items in one engine run; verdicts by item id. Closes the judges' backends
    afterwards.
    """
    from harness.engine.session import SessionOptions, judge_once
    from harness.records import Verdict

    out: list[
        Any
    ] = []  # the sink also takes pairwise records; only pointwise items are planned here
    path = None if isinstance(cache, bool) else cache
    options = SessionOptions(use_cache=bool(cache), cache_path=path, quiet=True)

    async def go() -> None:
        await judge_once(items, bound, constitution, out.extend, options=options)

    _run_async(go)
    return {v.item_id: v for v in out if isinstance(v, Verdict)}


def check_verdict(
    verdict: Verdict, principle: Principle, threshold: float | None, what: str
) -> None:
    """Raise JudgeFailure unless the verdict is scored at or above the threshold (default: the
    principle's).
    """
    __tracebackhide__ = True  # pytest shows the failure at the caller's line
    limit = principle.pass_threshold if threshold is None else threshold
    where = f"{what} · {principle.id} (judge {verdict.judge})"
    if verdict.status != "scored" or verdict.score is None:
        raise JudgeFailure(f"{where}: could not be scored ({verdict.status}): {verdict.reason}")
    if verdict.score < limit:
        rationale = verdict.rationale or "(the judge gave no rationale)"
        raise JudgeFailure(
            f"{where}: score {verdict.score:g} < threshold {limit:g} on 1..{principle.scale_max}\n"
            f"rationale: {rationale}"
        )


def assert_principle(
    response: str,
    principle: str,
    *,
    judge: str | Path = "rules",
    threshold: float | None = None,
    prompt: str = "",
    constitution: str | Path = "default",
    cache: bool | Path = False,
) -> Verdict:
    """Judge ``response`` against one principle and fail below the threshold.

    ``response`` answers ``prompt``; it is judged on one principle of ``constitution`` with
    ``judge`` (a built-in name or judge file); raise ``AssertionError`` with score, threshold and
    rationale if it scores
    below ``threshold`` (default: the principle's pass threshold). Returns the verdict otherwise.

    ``cache`` uses the persistent judge cache (True: the default location; a path: that file).
    """
    __tracebackhide__ = True
    from harness.config import load_constitution, load_judge
    from harness.engine.plan import plan
    from harness.engine.runner import bind_judges
    from harness.records import Candidate, Case

    full, _ = load_constitution(constitution)
    if principle not in {p.id for p in full.principles}:
        raise ValueError(f"constitution {full.id!r} has no principle {principle!r}")
    one = full.model_copy(update={"principles": [full.principle(principle)]})
    bound = bind_judges([load_judge(judge)])
    case = Case(
        id="assert_principle",
        prompt=prompt,
        candidates=[Candidate(generator="response", response=response)],
    )
    items = plan([case], one, bound)
    if not items:
        raise ValueError(f"judge {judge!s} does not judge principle {principle!r}")
    verdict = judge_items(items, bound, one, cache=cache)[items[0].item_id]
    check_verdict(verdict, one.principles[0], threshold, "response")
    return verdict


# --------------------------------------------------------------------------- options and collection


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the plugin's command-line options and ini settings."""
    group = parser.getgroup("harness", "constitutional critic harness")
    group.addoption(
        "--harness-suite",
        action="append",
        default=[],
        metavar="PATH",
        help="collect this suite file as tests (repeatable)",
    )
    group.addoption(
        "--harness-judge",
        action="append",
        default=[],
        metavar="JUDGE",
        help="judge suite tests with this judge (repeatable; default: the suite's judges)",
    )
    group.addoption("--harness-cache", action="store_true", help="use the persistent judge cache")
    parser.addini(
        "harness_suites", type="paths", default=[], help="suite files to collect as tests"
    )
    parser.addini("harness_judge", type="args", default=[], help="judges for suite tests")


def pytest_configure(config: pytest.Config) -> None:
    """Collect suites named on the command line or in the ini file."""
    cli = [config.invocation_params.dir / p for p in config.getoption("harness_suite")]
    ini = [Path(p) for p in config.getini("harness_suites")]
    config.stash[SUITES_KEY] = {p.resolve() for p in [*cli, *ini]}
    # Suites from the ini file join the run like testpaths do: only when no paths were given.
    extra = cli + (ini if config.args_source != pytest.Config.ArgsSource.ARGS else [])
    config.args.extend(str(p) for p in extra)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Collect a suite file as a pytest file of judged items."""
    if file_path.name.endswith(SUITE_SUFFIX) or file_path.resolve() in parent.config.stash.get(
        SUITES_KEY, set()
    ):
        return SuiteFile.from_parent(parent, path=file_path)
    return None


@pytest.fixture(name="assert_principle")
def _assert_principle_fixture(request: pytest.FixtureRequest) -> Any:
    """:func:`assert_principle`, using the judge cache when ``--harness-cache`` is given."""
    use_cache = bool(request.config.getoption("harness_cache"))

    def check(response: str, principle: str, **kwargs: Any) -> Verdict:
        __tracebackhide__ = True
        kwargs.setdefault("cache", use_cache)
        return assert_principle(response, principle, **kwargs)

    return check


class SuiteFile(pytest.File):
    """A suite file: plans its work items at collection, judges them in one batch at first use."""

    inputs: Inputs
    bound: list[BoundJudge]

    def collect(self) -> Iterator[pytest.Item]:
        """One test item per case, candidate, principle and judge."""
        from harness.engine.plan import plan
        from harness.engine.runner import RunOptions, bind_judges, load_inputs
        from harness.errors import HarnessError

        judges = self.config.getoption("harness_judge") or self.config.getini("harness_judge")
        try:
            self.inputs = load_inputs(RunOptions(suite=self.path, judges=list(judges)))
            self.bound = bind_judges(self.inputs.judges, trusted=self.inputs.judges_named)
        except HarnessError as exc:
            raise self.CollectError(str(exc)) from None
        self.verdicts: dict[str, Verdict] = {}
        work = plan(self.inputs.suite.cases, self.inputs.constitution, self.bound)
        many_judges = len(self.bound) > 1
        many_gens = {c.id: len(c.candidates) > 1 for c in self.inputs.suite.cases}
        for w in work:
            parts = [w.generator] if many_gens[w.case_id] else []
            parts += [w.principle] + ([w.judge] if many_judges else [])
            yield SuiteItem.from_parent(self, name=f"{w.case_id}[{'-'.join(parts)}]", work=w)

    def verdict(self, item: SuiteItem) -> Verdict:
        """The item's verdict; the first call judges every selected item of this file at once."""
        if item.work.item_id not in self.verdicts:
            mine = [
                i.work for i in self.session.items if isinstance(i, SuiteItem) and i.parent is self
            ]
            todo = [w for w in mine if w.item_id not in self.verdicts] or [item.work]
            cache = bool(self.config.getoption("harness_cache"))
            self.verdicts.update(
                judge_items(todo, self._judges(), self.inputs.constitution, cache=cache)
            )
        return self.verdicts[item.work.item_id]

    def _judges(self) -> list[BoundJudge]:
        from harness.engine.runner import bind_judges

        bound, self.bound = self.bound, []  # judge_items closes them; a later batch binds afresh
        return bound or bind_judges(self.inputs.judges, trusted=self.inputs.judges_named)


class SuiteItem(pytest.Item):
    """One case × candidate × principle × judge of a suite file."""

    def __init__(self, *, work: WorkItem, **kwargs: Any):
        super().__init__(**kwargs)
        self.work = work

    @property
    def suite_file(self) -> SuiteFile:
        """The suite file this item belongs to."""
        assert isinstance(self.parent, SuiteFile)
        return self.parent

    def runtest(self) -> None:
        """Judge the item (the file's first item judges them all) and check the verdict."""
        verdict = self.suite_file.verdict(self)
        self.user_properties += [("judge", verdict.judge), ("score", verdict.score)]
        principle = self.suite_file.inputs.constitution.principle(self.work.principle)
        check_verdict(verdict, principle, None, f"case {self.work.case_id} [{self.work.generator}]")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        """Show a judge failure as its message, without a traceback."""
        if isinstance(excinfo.value, JudgeFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """Where the item comes from, for pytest's report."""
        w = self.work
        return self.path, None, f"{w.case_id} [{w.generator}] · {w.principle} (judge {w.judge})"
