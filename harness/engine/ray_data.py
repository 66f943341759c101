"""Judge a Ray Dataset: rows of prompt and response in, verdict rows out.

For data that already lives in Ray. :func:`judge_dataset` maps the dataset with ``map_batches`` over
a pool of actors; each actor holds one backend instance (a local model loads once per actor) and
judges its batches with the same planning and executor as ``harness run`` (prompts, retries, parsing
into verdicts), so a row's verdicts equal the CLI's on the same case. There is no run folder, cache
or budget here: the output is a Dataset, written wherever the caller writes datasets.

Ray is imported only when :func:`judge_dataset` is called.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from harness.config import load_constitution, load_judge
from harness.engine.executor import Record
from harness.engine.executor import execute as execute_local
from harness.engine.plan import BoundJudge, content_hash, plan
from harness.engine.progress import Progress
from harness.engine.ray_executor import build_backend, import_ray
from harness.records import Candidate, Case, Constitution, JudgeConfig, Message

#: Columns of every verdict row, in order (a fixed schema, whatever the batch holds).
COLUMNS = [
    "id",
    "generator",
    "principle",
    "judge",
    "status",
    "score",
    "normalized",
    "passed",
    "rationale",
    "reason",
    "item_id",
    "tokens_in",
    "tokens_out",
    "latency_s",
    "attempts",
]
DEFAULT_GENERATOR = "model"


def row_case(row: dict[str, Any]) -> Case:
    """One case with one candidate from a row; the id defaults to a hash of prompt and response."""
    prompt = row["prompt"]
    if not isinstance(prompt, str):  # a conversation: a list of {role, content}
        prompt = [Message.model_validate(dict(m)) for m in prompt]
    rid = _present(row.get("id"))
    if rid is None:
        rid = content_hash({"prompt": row["prompt"], "response": row["response"]})[:16]
    generator = _present(row.get("generator")) or DEFAULT_GENERATOR
    tags = _present(row.get("tags"))
    return Case(
        id=str(rid),
        prompt=prompt,
        tags=[str(t) for t in tags] if tags is not None else [],
        candidates=[Candidate(generator=str(generator), response=str(row["response"]))],
    )


def _present(value: Any) -> Any:
    """``value``, or None where a column is missing or null (pandas gives NaN / None)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value


def verdict_row(record: Record) -> dict[str, Any]:
    """The output columns of one verdict."""
    data = record.model_dump()
    data["id"] = data.pop("case_id")
    return {c: data.get(c) for c in COLUMNS}


class DatasetJudge:
    """The ``map_batches`` callable: built once per actor, judges one batch of rows per call."""

    def __init__(self, config: JudgeConfig, where: str, constitution: Constitution, seed: int):
        self.judge = BoundJudge(config, build_backend(config, where))
        self.constitution, self.seed = constitution, seed
        self.loop = asyncio.new_event_loop()  # one loop for the actor's life: clients bind to it

    def __call__(self, batch: Any) -> Any:
        """Judge one batch of rows (a pandas DataFrame); one row per verdict."""
        import pandas as pd

        cases = [row_case(r) for r in batch.to_dict("records")]
        items = plan(cases, self.constitution, [self.judge], self.seed)
        records: list[Record] = []
        progress = Progress({self.judge.config.id: len(items)}, quiet=True)
        self.loop.run_until_complete(
            execute_local(items, [self.judge], self.constitution, None, records.extend, progress)
        )
        order = {i.item_id: k for k, i in enumerate(items)}
        records.sort(key=lambda r: order[r.item_id])
        return pd.DataFrame([verdict_row(r) for r in records], columns=COLUMNS)


def judge_dataset(
    dataset: Any,
    judge: str | Path = "rules",
    constitution: str | Path = "default",
    *,
    actors: int | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> Any:
    """A Dataset of verdict rows (one per input row × principle the judge covers), judged lazily.

    ``judge`` and ``constitution`` are files or built-in names, as for ``harness run``; the actor
    pool's size and resources default to the judge config's ``ray`` section.
    """
    import_ray()
    config, path = load_judge(str(judge))
    const, _ = load_constitution(str(constitution))
    return dataset.map_batches(
        DatasetJudge,
        fn_constructor_kwargs={
            "config": config,
            "where": str(path),
            "constitution": const,
            "seed": seed,
        },
        batch_size=batch_size,
        batch_format="pandas",
        concurrency=actors or config.ray.actors,
        num_cpus=config.ray.num_cpus if num_cpus is None else num_cpus,
        num_gpus=config.ray.num_gpus if num_gpus is None else num_gpus,
    )
