"""The run folder: one writer at a time, torn tails cut (and nothing else), corrupt lines skipped
and
judged again, Parquet parts that follow the log, readers that work on a run still being written."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.engine.runner import RunOptions, run
from harness.errors import RunError
from harness.records import Verdict
from harness.rundir import (
    TABLES,
    VERDICTS,
    RunWriter,
    latest_status,
    read_jsonl_tolerant,
    read_run,
    read_table,
    status_counts,
    write_atomic,
)
from tests.helpers import write_tiny_suite


def verdict(item: str, status: str = "scored") -> Verdict:
    score = 3 if status == "scored" else None
    return Verdict(
        item_id=item, case_id="c", generator="g", principle="p", judge="j", status=status,
        score=score,
    )  # fmt: skip


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path: Path) -> None:
    first = RunWriter(tmp_path / "run").open()
    try:
        with pytest.raises(RunError, match="in use by harness process"):
            RunWriter(tmp_path / "run").open()
    finally:
        first.close()
    RunWriter(tmp_path / "run").open().close()  # free again once the first let go


def test_a_second_process_is_refused_and_cuts_nothing(tmp_path: Path) -> None:
    """The lost-rows bug: a second process's start-up repair cut rows the first had appended."""
    writer = RunWriter(tmp_path / "run").open()
    writer.append([verdict("a")])
    code = textwrap.dedent(
        f"""
        from harness.rundir import RunWriter
        from harness.errors import RunError
        try:
            RunWriter({str(tmp_path / "run")!r}).open()
        except RunError as exc:
            print("refused:", exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("refused:")
    writer.append([verdict("b")])  # appended after the other process looked
    writer.close()
    rows, _ = read_jsonl_tolerant(tmp_path / "run" / VERDICTS)
    assert [r["item_id"] for r in rows] == ["a", "b"]


def test_only_an_unterminated_last_line_is_cut(tmp_path: Path) -> None:
    root = tmp_path / "run"
    with RunWriter(root) as w:
        w.append([verdict("a"), verdict("b")])
    with (root / VERDICTS).open("a") as fh:
        fh.write(verdict("c").model_dump_json()[:30])  # a crash mid-write
    with RunWriter(root) as w:
        w.append([verdict("d")])
    rows, _ = read_jsonl_tolerant(root / VERDICTS)
    assert [r["item_id"] for r in rows] == ["a", "b", "d"]


def test_a_corrupt_middle_line_is_skipped_counted_and_the_rest_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "run"
    with RunWriter(root) as w:
        w.append([verdict("a")])
    with (root / VERDICTS).open("a") as fh:
        fh.write('{"item_id": "broken", "status\n')  # garbage, but a whole line
    with RunWriter(root) as w:
        w.append([verdict("b"), verdict("c")])
    assert "skipped 1 corrupt line" in capsys.readouterr().err
    assert sorted(latest_status(root)) == ["a", "b", "c"]
    assert list(read_table(root, VERDICTS)["item_id"]) == ["a", "b", "c"]


def test_later_rows_supersede_earlier_ones(tmp_path: Path) -> None:
    root = tmp_path / "run"
    with RunWriter(root) as w:
        w.append([verdict("a", "error"), verdict("b")])
        w.sync()  # the error is in a Parquet part, its retry only in the log's tail
        w.append([verdict("a")])
    assert latest_status(root) == {"a": "scored", "b": "scored"}
    with RunWriter(root) as w:  # and once the tail is converted too
        pass
    assert latest_status(root) == {"a": "scored", "b": "scored"}
    every = read_table(root, VERDICTS, ["item_id", "status"], latest=False)
    assert list(every["status"]) == ["error", "scored", "scored"]


def test_status_counts_count_each_items_latest_row(tmp_path: Path) -> None:
    root = tmp_path / "run"
    with RunWriter(root) as w:
        w.append([verdict("a"), verdict("b", "unscored")])
    assert status_counts(root, VERDICTS) == {"scored": 1, "unscored": 1}  # no error: one column
    with RunWriter(root) as w:
        w.append([verdict("c", "error"), verdict("d", "error")])
        w.sync()
        w.append([verdict("c")])  # redone: its error row is superseded
    assert status_counts(root, VERDICTS) == {"scored": 2, "unscored": 1, "error": 1}
    assert status_counts(tmp_path / "empty", VERDICTS) == {}


def test_parts_of_a_log_edited_by_hand_are_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "run"
    with RunWriter(root) as w:
        w.append([verdict("a"), verdict("b")])
    assert list((root / TABLES).glob("*.parquet"))
    log = root / VERDICTS
    text = log.read_text().replace('"b"', '"z"')  # same length, different bytes
    log.write_text(text)
    with RunWriter(root):
        pass
    assert sorted(read_table(root, VERDICTS)["item_id"]) == ["a", "z"]


def test_readers_see_a_run_while_it_is_written(tmp_path: Path) -> None:
    root = tmp_path / "run"
    writer = RunWriter(root).open()
    writer.append([verdict("a")])
    writer.sync()
    writer.append([verdict("b")])  # not in any part yet
    assert sorted(read_table(root, VERDICTS)["item_id"]) == ["a", "b"]
    writer.close()


def test_write_atomic_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    write_atomic(target, "one")
    write_atomic(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_a_run_resumes_after_its_log_loses_a_line(tmp_path: Path) -> None:
    options = RunOptions(
        suite=write_tiny_suite(tmp_path), judges=["rules"], out=tmp_path / "out",
        use_cache=False, quiet=True,
    )  # fmt: skip
    first = run(options)
    log = first.run_dir / VERDICTS
    lines = log.read_text().splitlines()
    lines[3] = "{not json"  # corrupt one verdict in the middle
    log.write_text("\n".join(lines) + "\n")
    second = run(options)
    assert second.session is not None and second.session.judges["rules"].items == 1
    assert second.complete and sum(second.counts.values()) == len(lines)
    ids = [json.loads(x)["item_id"] for x in log.read_text().splitlines() if x.startswith('{"')]
    assert len(set(ids)) == len(lines)
    assert len(read_run(first.run_dir).verdicts) == len(lines)
