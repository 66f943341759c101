"""Where the harness keeps things on disk: the user cache, and the project's data folders."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = "constitutional-harness"


def cache_dir() -> Path:
    r"""The user cache folder: ``$HARNESS_CACHE_DIR``, else the platform's convention.

    Linux ``$XDG_CACHE_HOME/constitutional-harness`` (default ``~/.cache/...``), macOS
    ``~/Library/Caches/...``, Windows ``%LOCALAPPDATA%\...\Cache``.
    """
    override = os.environ.get("HARNESS_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / APP
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / APP / "Cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / APP


def project_root() -> Path:
    """The checkout that holds ``harness/`` (for built-in constitutions, judges and suites)."""
    return Path(__file__).resolve().parent.parent
