"""Sample candidate responses from generator models: n per prompt, written as a suite's candidates file.

Each sample is an independent ``generate`` work item (seeded, so reruns hit the cache and a crash resumes);
the samples land in ``<output>.work/generations.jsonl`` first, then the candidates JSONL
(``case_id, generator, response``) that a suite names in ``candidates_file``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from harness.config import load_constitution, load_judge, load_suite
from harness.engine.cache import JudgeCache
from harness.engine.executor import execute
from harness.engine.plan import BoundJudge, WorkItem, make_item
from harness.engine.progress import Progress
from harness.engine.runner import bind_judges
from harness.engine.store import RunStore, write_atomic
from harness.judging.revision import TEMPLATE_VERSION, sample_request
from harness.schema import Case, Generation


@dataclass
class SampleOptions:
    """Which suite, which generator, how many samples."""

    suite: str | Path
    generator: str
    output: Path
    n: int = 4
    temperature: float = 0.8
    max_tokens: int = 256
    use_cache: bool = True
    quiet: bool = False


def sample_items(cases: list[Case], gen: BoundJudge, options: SampleOptions) -> list[WorkItem]:
    """One item per (case, sample index); the sample index is the seed."""
    identity = gen.backend.identity()
    return [
        make_item(
            gen.config.id,
            identity,
            case.id,
            f"{gen.config.id}-s{i}",
            "",
            sample_request(case, options.max_tokens, options.temperature, seed=i),
            TEMPLATE_VERSION,
            step="sample",
        )
        for case in cases
        for i in range(options.n)
    ]


def sample(options: SampleOptions) -> Path:
    """Generate the samples (resuming earlier work) and write the candidates file; returns its path."""
    loaded = load_suite(options.suite)
    gen = bind_judges([load_judge(options.generator)])[0]
    items = sample_items(loaded.cases, gen, options)
    store = RunStore(options.output.with_name(options.output.name + ".work"))
    store.root.mkdir(parents=True, exist_ok=True)
    done = store.done_items()
    todo = [i for i in items if i.item_id not in done or done[i.item_id].status == "error"]
    if todo:
        constitution, _ = load_constitution(
            "default"
        )  # unused by generation; the executor's signature needs one
        asyncio.run(_generate(todo, gen, constitution, store, options))
    return _write_candidates(store, items, options.output)


async def _generate(
    items: list[WorkItem],
    gen: BoundJudge,
    constitution: object,
    store: RunStore,
    options: SampleOptions,
) -> None:
    cache = JudgeCache() if options.use_cache else None
    try:
        await execute(
            items,
            [gen],
            constitution,
            cache,
            store.append,  # type: ignore[arg-type]
            Progress({gen.config.id: len(items)}, quiet=options.quiet),
        )
    finally:
        store.close()
        await gen.backend.aclose()
        if cache is not None:
            cache.close()


def _write_candidates(store: RunStore, items: list[WorkItem], output: Path) -> Path:
    done = store.done_items()
    rows = []
    for item in items:
        gen = done.get(item.item_id)
        if isinstance(gen, Generation) and gen.status == "scored" and gen.text.strip():
            rows.append(
                json.dumps(
                    {
                        "case_id": item.case_id,
                        "generator": item.generator,
                        "response": gen.text.strip(),
                    },
                    ensure_ascii=False,
                )
            )
    output.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(output, "".join(r + "\n" for r in rows))
    return output
