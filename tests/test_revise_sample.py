"""Critique → revision and candidate sampling, through the engine against the fault server (real
sockets)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.engine.revise import ReviseOptions, revise
from harness.engine.runner import RunOptions, run
from harness.engine.sample import SampleOptions, sample
from harness.rundir import read_run
from harness.testing.fault_server import RunningServer, start_fault_server
from tests.helpers import jsonl, write_tiny_suite


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with start_fault_server(latency_ms=0) as srv:
        yield srv


def model_config(folder: Path, base_url: str, name: str = "writer") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"id: {name}\nbackend: openai\noptions:\n  base_url: {base_url}\n  model: m\n"
        "  logprobs: false\n  structured_output: false\n",
        encoding="utf-8",
    )
    return path


def test_revise_failing_candidates(tmp_path: Path, server: RunningServer) -> None:
    suite = write_tiny_suite(tmp_path)
    result = run(
        RunOptions(
            suite=suite,
            judges=["rules"],
            out=tmp_path / "out",
            use_cache=False,
            quiet=True,
        )
    )
    failing = read_run(result.run_dir).verdicts.query("passed == False")
    assert len(failing) >= 2  # the refusal fails helpfulness, the overclaim fails honesty
    critic = model_config(tmp_path, server.base_url)
    path = revise(
        ReviseOptions(run_dir=result.run_dir, critic=str(critic), use_cache=False, quiet=True)
    )
    rows = jsonl(path)
    assert {(r["case_id"], r["generator"], r["principle"]) for r in rows} == set(
        zip(failing["case_id"], failing["generator"], failing["principle"], strict=True)
    )
    for r in rows:
        assert r["critique"] and r["status"] in {"ok", "failed"}
        if r["status"] == "ok":
            assert r["revision"] and r["revision"] != r["original"]
        else:
            assert r["reason"]
    gens = jsonl(result.run_dir / "revision" / "generations.jsonl")
    assert {g["step"] for g in gens} == {"critique", "revision"}
    before = server.stats()["requests"]
    revise(ReviseOptions(run_dir=result.run_dir, critic=str(critic), use_cache=False, quiet=True))
    assert server.stats()["requests"] == before  # a rerun resumes: nothing asked twice


def test_sample_writes_a_candidates_file(tmp_path: Path, server: RunningServer) -> None:
    suite = write_tiny_suite(tmp_path)
    gen = model_config(tmp_path, server.base_url, "sampler")
    out = sample(
        SampleOptions(
            suite=suite,
            generator=str(gen),
            output=tmp_path / "cands.jsonl",
            n=3,
            use_cache=False,
            quiet=True,
        )
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 * 3
    assert {r["generator"] for r in rows} == {"sampler-s0", "sampler-s1", "sampler-s2"}
    assert all(r["response"] for r in rows)
