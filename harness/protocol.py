"""Protocol decisions that both the engine (planning) and the analysis (reading) must agree on.

It sits at the bottom of the package, importing nothing of the harness, so that the engine and the
analysis can share it without importing each other.
"""

from __future__ import annotations

import random


def single_order(a: str, b: str, seed: int, case_id: str) -> tuple[str, str]:
    """A seeded coin decides which is shown first, so a one-order run has no systematic position."""
    return (a, b) if random.Random(f"{seed}:{case_id}:{a}:{b}").random() < 0.5 else (b, a)
