"""Sample candidate responses from generator models: n per prompt, written as a suite's candidates
file.

Each sample is an independent ``generate`` work item (seeded, so reruns hit the cache and a crash
resumes); the samples land in ``<output>.work/generations.jsonl`` first, then the candidates JSONL
(``case_id, generator, response``) that a suite names in ``candidates_file``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from harness.config import load_constitution, load_judge
from harness.engine.plan import BoundJudge, WorkItem, cache_identity, make_item
from harness.engine.runner import bind_judges
from harness.engine.session import SessionOptions, judge_once
from harness.judging.revision import TEMPLATE_VERSION, sample_request
from harness.records import Case, Generation
from harness.rundir import GENERATIONS, RunWriter, latest_status, read_records, write_atomic
from harness.suite_stream import load_suite


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
    identity = cache_identity(gen.backend)
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
    options.output.parent.mkdir(parents=True, exist_ok=True)
    with RunWriter(options.output.with_name(options.output.name + ".work")) as store:
        status = latest_status(store.root)
        todo = [i for i in items if status.get(i.item_id, "error") == "error"]
        if todo:
            # Generation reads no principle; the session's signature still takes a constitution.
            constitution, _ = load_constitution("default")
            opts = SessionOptions(use_cache=options.use_cache, quiet=options.quiet)
            asyncio.run(judge_once(todo, [gen], constitution, store.append, options=opts))
    return _write_candidates(store, items, options.output)


def _write_candidates(store: RunWriter, items: list[WorkItem], output: Path) -> Path:
    done = read_records(store.root, GENERATIONS)
    rows = []
    for item in items:
        gen = done.get(item.item_id)
        if isinstance(gen, Generation) and gen.status == "scored" and gen.text.strip():
            row = {
                "case_id": item.case_id,
                "generator": item.generator,
                "response": gen.text.strip(),
            }
            rows.append(json.dumps(row, ensure_ascii=False))
    write_atomic(output, "".join(r + "\n" for r in rows))
    return output
