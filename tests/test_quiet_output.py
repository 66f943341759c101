"""What a run prints (issue 12, item 9): a quiet run shows no model-loading bars or FutureWarnings,
and progress written to a log (not a terminal) is a line at intervals, not a redraw per update."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.engine.progress import LOG_INTERVAL, Progress
from harness.records import Verdict

ROOT = Path(__file__).resolve().parent.parent


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _verdict(i: int) -> Verdict:
    return Verdict(
        item_id=str(i), case_id="c", generator="g", principle="p", judge="j", status="scored"
    )


@pytest.mark.parametrize("stream, lines", [(io.StringIO(), 1), (Terminal(), 1)])
def test_progress_lines_are_paced(stream: io.StringIO, lines: int) -> None:
    progress = Progress({"j": 500}, stream=stream)
    for i in range(500):
        progress.record("j", [_verdict(i)])
    written = stream.getvalue()
    end = "\r" if stream.isatty() else "\n"
    assert written.count(end) == lines and written.endswith(end)
    assert progress.interval == (1.0 if stream.isatty() else LOG_INTERVAL)


@pytest.mark.slow
def test_quiet_run_prints_no_bars_or_future_warnings(tmp_path: Path) -> None:
    """The embedded SmolLM2 judge (a real model load) under ``--quiet``, output to a pipe."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            "demo",
            "-j",
            "smollm2",
            "-q",
            "--max-cases",
            "1",
            "-p",
            "honesty",
            "--out",
            str(tmp_path),
            "--no-cache",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    for noise in ("it/s]", "\r", "FutureWarning", "Loading weights", "GGUF tensors"):
        assert noise not in done.stderr, done.stderr[-2000:]
