"""The manifest of a run: its inputs with hashes, judge configs, versions, seed and protocol.

The run id defaults to the suite id plus :func:`fingerprint`, so the same command finds and resumes
the same run folder.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config import sha256_file
from harness.credentials import redact_config
from harness.engine.plan import content_hash
from harness.records import InputRecord, RunManifest

if TYPE_CHECKING:
    from harness.engine.runner import Inputs, RunOptions

VERSIONED = [
    "constitutional-harness",
    "pydantic",
    "torch",
    "transformers",
    "aiohttp",
    "pandas",
    "numpy",
]


def _record(path: Path) -> InputRecord:
    # absolute, so that --resume finds the inputs from any working directory
    return InputRecord(path=str(path.resolve()), sha256=sha256_file(path))


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
        "prescreen": options.prescreen,
    }


def new_manifest(inputs: Inputs, options: RunOptions, n_items: int, run_id: str) -> RunManifest:
    """The manifest of a new run: inputs with hashes, judge configs (key variable names only),
    versions.
    """
    return RunManifest(
        run_id=run_id,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        suite=_record(inputs.suite.path),
        constitution=_record(inputs.constitution_path),
        judges=[_record(p) for _, p in inputs.judges],
        judge_configs=[redact_config(c.model_dump(exclude={"schema_"})) for c, _ in inputs.judges],
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
