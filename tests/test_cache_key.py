"""The cache key names the weights, not only the model's name (issue 12, item 16): the server's
model fingerprint, where it gives one, and a user-set ``revision`` join it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.backends.openai import OpenAIBackend, model_fingerprint
from harness.cli import main
from harness.testing.fault_server import RunningServer, start_fault_server
from tests.helpers import write_tiny_suite


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with start_fault_server(fingerprint="weights-A", seed=5) as running:
        yield running


def judge_file(folder: Path, base_url: str, **options: object) -> Path:
    body = {
        "id": "fp",
        "backend": "openai",
        "options": {"base_url": base_url, "model": "fault-judge", **options},
    }
    path = folder / "fp.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def calls_for_a_run(server: RunningServer, suite: Path, judge: Path, out: Path) -> int:
    before = server.stats()["requests"]
    assert main(["run", str(suite), "-j", str(judge), "--out", str(out), "--quiet"]) == 0
    return server.stats()["requests"] - before


def test_new_weights_behind_the_same_name_are_judged_again(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    suite, judge = write_tiny_suite(tmp_path), judge_file(tmp_path, server.base_url)
    first = calls_for_a_run(server, suite, judge, tmp_path / "a")
    assert first > 0
    assert calls_for_a_run(server, suite, judge, tmp_path / "b") == 0  # same weights: cached
    server.configure(fingerprint="weights-B")
    try:
        assert calls_for_a_run(server, suite, judge, tmp_path / "c") == first
    finally:
        server.configure(fingerprint="weights-A")


def test_a_user_set_revision_joins_the_key_and_no_revision_keeps_old_keys() -> None:
    def identity(**options: object) -> dict[str, object]:
        opts = {"base_url": "http://127.0.0.1:1/v1", "model": "m", **options}
        return OpenAIBackend(OpenAIBackend.Options.model_validate(opts)).identity()

    plain = identity()
    assert "revision" not in plain and "fingerprint" not in plain
    assert "server_fingerprint" not in plain  # never probed
    assert identity(revision="2024-06") != identity(revision="2024-07") != plain
    assert identity(fingerprint=False) == plain  # switching the probe off is not a new model


def test_only_stable_identifying_fields_make_a_fingerprint() -> None:
    vllm = {"id": "m", "created": 1733, "root": "/models/qwen", "permission": [{"id": "p-1"}]}
    again = {**vllm, "created": 1999, "permission": [{"id": "p-2"}]}  # per-request values
    assert model_fingerprint({"data": [vllm]}, "m") == model_fingerprint({"data": [again]}, "m")
    swapped = {**vllm, "root": "/models/llama"}
    assert model_fingerprint({"data": [swapped]}, "m") != model_fingerprint({"data": [vllm]}, "m")
    bare = {"id": "m", "object": "model", "created": 5, "owned_by": "openai"}
    assert model_fingerprint({"data": [bare]}, "m") is None
    assert (
        model_fingerprint({"data": [vllm]}, "other") is None and model_fingerprint([], "m") is None
    )
