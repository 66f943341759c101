"""Constitutional critic harness: judge model outputs against written principles.

Everything the ``harness`` command does is importable from here. Names are loaded on first use, so
``import harness`` stays light (no pandas, torch or HTTP client until they are needed)::

    import harness
    result = harness.run(harness.RunOptions(suite="demo"))
    data = harness.read_run(result.run_dir)
    print(harness.summary(data.verdicts, data.constitution))
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # records
    "Principle": "harness.records",
    "Constitution": "harness.records",
    "Example": "harness.records",
    "Message": "harness.records",
    "Case": "harness.records",
    "Candidate": "harness.records",
    "HumanPreference": "harness.records",
    "Suite": "harness.records",
    "JudgeConfig": "harness.records",
    "Verdict": "harness.records",
    "RunManifest": "harness.records",
    # errors
    "HarnessError": "harness.errors",
    "ConfigError": "harness.errors",
    "ValidationFailed": "harness.errors",
    "MissingSecret": "harness.errors",
    "RunError": "harness.errors",
    "JudgeError": "harness.errors",
    "TransientJudgeError": "harness.errors",
    "Issue": "harness.errors",
    # configuration
    "load_suite": "harness.suite_stream",
    "load_constitution": "harness.config",
    "load_judge": "harness.config",
    "validate_file": "harness.file_check",
    "LoadedSuite": "harness.suite_stream",
    # backends
    "Backend": "harness.backends.base",
    "BackendRequest": "harness.backends.base",
    "BackendResponse": "harness.backends.base",
    "backend_class": "harness.backends.base",
    "available_backends": "harness.backends.base",
    # engine
    "WorkItem": "harness.engine.plan",
    "plan": "harness.engine.plan",
    "BoundJudge": "harness.engine.plan",
    "execute": "harness.engine.executor",
    "JudgeCache": "harness.engine.cache",
    "RunOptions": "harness.engine.runner",
    "RunResult": "harness.engine.runner",
    "run": "harness.engine.runner",
    "resume": "harness.engine.runner",
    "bind_judges": "harness.engine.runner",
    "read_run": "harness.rundir",
    "RunData": "harness.rundir",
    "RunWriter": "harness.rundir",
    # analysis and outputs
    "summary": "harness.analysis.scores",
    "overall": "harness.analysis.scores",
    "render_report": "harness.report.render",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
