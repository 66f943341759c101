"""The public names of ``harness`` are importable, listed in the README, and import stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import harness

README = Path(__file__).resolve().parent.parent / "README.md"


def test_all_names_resolve() -> None:
    for name in harness.__all__:
        assert getattr(harness, name) is not None, name


def test_all_is_documented_in_readme() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [n for n in harness.__all__ if f"`{n}`" not in text]
    assert not missing, f"public names missing from README: {missing}"


def test_import_is_light() -> None:
    heavy = "('torch', 'transformers', 'pandas', 'aiohttp')"
    code = f"import harness, sys; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
