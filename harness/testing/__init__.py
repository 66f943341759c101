"""Test helpers that ship with the harness: a fault-injecting OpenAI-compatible server.

They live in the package (not under ``tests/``) so benchmarks, third-party backends and users
debugging their own setup can use them too.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.testing.fault_server import (
        FaultConfig,
        RunningServer,
        judge_answer,
        start_fault_server,
    )

__all__ = ["FaultConfig", "RunningServer", "judge_answer", "start_fault_server"]


def __getattr__(name: str) -> Any:
    # Imported lazily: `python -m harness.testing.fault_server` must not find the module already
    # loaded by this package (runpy warns, and the server would exist twice).
    if name in __all__:
        return getattr(importlib.import_module("harness.testing.fault_server"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
