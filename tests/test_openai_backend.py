"""The ``openai`` backend: request/response mapping, error classes, and secrets, against real
servers.

Unit tests serve the fault server inside the test's event loop; integration tests run it as a
separate process and talk to it over real sockets. Nothing here is mocked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from aiohttp import web

from harness.backends.base import BackendRequest, BackendResponse, backend_class, parse_options
from harness.backends.openai import (
    SCHEMA_NAME,
    OpenAIBackend,
    parse_retry_after,
    read_choice_logprobs,
)
from harness.errors import ConfigError, JudgeError, MissingSecret, TransientJudgeError
from harness.judging.pointwise import Style, build_request, read_score
from harness.records import Candidate, Case, Message, Principle
from harness.testing.fault_server import (
    RATIONALE,
    FaultConfig,
    FaultServer,
    RunningServer,
    judge_answer,
    start_fault_server,
    usage_for,
)

T = TypeVar("T")
SCALE = ["1", "2", "3", "4", "5"]
CHAT = [
    Message(role="system", content="Judge fairly."),
    Message(role="user", content="Rate: the sky is blue."),
]
CHAT_DICTS = [m.model_dump() for m in CHAT]
FAKE_KEY = "sk-test-DO-NOT-LEAK-4f2a9c81e7"
KEY_VAR = "HARNESS_TEST_OPENAI_KEY"


def options(base_url: str = "http://127.0.0.1:9/v1", **kw: Any) -> OpenAIBackend.Options:
    return OpenAIBackend.Options(base_url=base_url, model="judge-model", **kw)


def request(**kw: Any) -> BackendRequest:
    return BackendRequest(messages=CHAT, **kw)


def in_process(config: FaultConfig, fn: Callable[[str, FaultServer], Awaitable[T]]) -> T:
    """Run ``fn(base_url, server)`` with the fault server serving inside the same event loop."""

    async def go() -> T:
        server = FaultServer(config)
        async with server.running() as url:
            return await fn(url + "/v1", server)

    return asyncio.run(go())


def complete_once(base_url: str, req: BackendRequest, **kw: Any) -> BackendResponse:
    """One call through a fresh backend, closed afterwards."""

    async def go() -> BackendResponse:
        backend = OpenAIBackend(options(base_url, **kw))
        try:
            [resp] = await backend.complete([req])
            return resp
        finally:
            await backend.aclose()

    return asyncio.run(go())


def failure(
    base_url: str, req: BackendRequest | None = None, *, judge: str | None = None, **kw: Any
) -> JudgeError:
    """The JudgeError one call raises (fails the test if it succeeds or raises anything else)."""
    with pytest.raises(JudgeError) as info:
        asyncio.run(
            _complete_with(OpenAIBackend(options(base_url, **kw), judge=judge), req or request())
        )
    return info.value


async def _complete_with(backend: OpenAIBackend, req: BackendRequest) -> list[BackendResponse]:
    try:
        return await backend.complete([req])
    finally:
        await backend.aclose()


# --------------------------------------------------------------------------- request body


def test_registered_under_its_name() -> None:
    assert backend_class("openai") is OpenAIBackend


def test_options_forbid_unknown_keys_and_document_every_field() -> None:
    with pytest.raises(ConfigError, match="api_key"):
        parse_options(
            OpenAIBackend, {"base_url": "http://x/v1", "model": "m", "api_key": "sk-oops"}, "j.yaml"
        )
    with pytest.raises(ConfigError, match="base_url"):
        parse_options(OpenAIBackend, {"base_url": "127.0.0.1:8000/v1", "model": "m"}, "j.yaml")
    fields = OpenAIBackend.Options.model_fields
    assert {
        "base_url",
        "model",
        "api_key_env",
        "temperature",
        "max_tokens",
        "logprobs",
        "top_logprobs",
        "structured_output",
        "timeout_s",
        "extra_body",
    } <= set(fields)
    assert all(f.description for f in fields.values())


def test_identity_leaves_out_volatile_options() -> None:
    identity = OpenAIBackend(options(timeout_s=3)).identity()
    assert identity["backend"] == "openai"
    assert identity["model"] == "judge-model"
    assert "timeout_s" not in identity and "api_key_env" not in identity


def test_body_maps_messages_and_asks_at_least_one_token() -> None:
    body = OpenAIBackend(options()).request_body(request(max_tokens=0, seed=3))
    assert body["messages"] == CHAT_DICTS
    assert body["model"] == "judge-model"
    assert body["max_tokens"] == 1
    assert body["seed"] == 3
    assert "logprobs" not in body and "response_format" not in body


def test_body_caps_max_tokens_and_overrides_temperature() -> None:
    backend = OpenAIBackend(options(max_tokens=50, temperature=0.7))
    body = backend.request_body(request(max_tokens=400, temperature=0.0))
    assert (body["max_tokens"], body["temperature"]) == (50, 0.7)
    body = OpenAIBackend(options()).request_body(request(max_tokens=400, temperature=0.3))
    assert (body["max_tokens"], body["temperature"]) == (400, 0.3)


def test_body_asks_for_logprobs_only_with_choices_and_the_option() -> None:
    body = OpenAIBackend(options(top_logprobs=7)).request_body(request(choices=SCALE))
    assert (body["logprobs"], body["top_logprobs"]) == (True, 7)
    assert "logprobs" not in OpenAIBackend(options(logprobs=False)).request_body(
        request(choices=SCALE)
    )


def test_body_carries_the_schema_for_structured_output() -> None:
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}
    body = OpenAIBackend(options()).request_body(request(json_schema=schema, max_tokens=64))
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": True},
    }
    off = OpenAIBackend(options(structured_output=False)).request_body(request(json_schema=schema))
    assert "response_format" not in off


def test_extra_body_is_merged_last() -> None:
    body = OpenAIBackend(options(extra_body={"top_k": 1, "seed": 99})).request_body(request())
    assert (body["top_k"], body["seed"]) == (1, 99)


# --------------------------------------------------------------------------- responses (in-process
# server)


def test_logprobs_are_read_into_choice_logprobs() -> None:
    async def go(base: str, server: FaultServer) -> BackendResponse:
        backend = OpenAIBackend(options(base))
        try:
            [resp] = await backend.complete([request(choices=SCALE, max_tokens=0)])
        finally:
            await backend.aclose()
        sent = server.kept[-1]
        assert (sent["max_tokens"], sent["logprobs"], sent["top_logprobs"]) == (1, True, 20)
        return resp

    resp = in_process(FaultConfig(), go)
    score, logprobs = judge_answer(CHAT_DICTS)
    assert resp.choice_logprobs == pytest.approx(logprobs)
    assert resp.text == str(score)
    usage = usage_for(CHAT_DICTS, str(score))
    assert (resp.tokens_in, resp.tokens_out) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert resp.latency_s > 0


def test_choice_logprobs_follow_the_requested_choices() -> None:
    async def go(base: str, _: FaultServer) -> BackendResponse:
        backend = OpenAIBackend(options(base))
        try:
            return (await backend.complete([request(choices=["1", "2", "yes"])]))[0]
        finally:
            await backend.aclose()

    resp = in_process(FaultConfig(), go)
    _, logprobs = judge_answer(CHAT_DICTS)
    assert resp.choice_logprobs == pytest.approx({"1": logprobs["1"], "2": logprobs["2"]})


def test_no_logprobs_without_choices_or_with_the_option_off() -> None:
    async def go(base: str, _: FaultServer) -> list[BackendResponse]:
        plain = OpenAIBackend(options(base))
        off = OpenAIBackend(options(base, logprobs=False))
        try:
            return [
                *(await plain.complete([request(max_tokens=4)])),
                *(await off.complete([request(choices=SCALE)])),
            ]
        finally:
            await plain.aclose()
            await off.aclose()

    for resp in in_process(FaultConfig(), go):
        assert resp.choice_logprobs is None
        assert resp.text == str(judge_answer(CHAT_DICTS)[0])


def test_a_batch_runs_concurrently_and_keeps_order() -> None:
    chats = [[Message(role="user", content=f"case {i}")] for i in range(6)]

    async def go(base: str, _: FaultServer) -> tuple[list[BackendResponse], float]:
        backend = OpenAIBackend(options(base))
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            out = await backend.complete([BackendRequest(messages=c, max_tokens=1) for c in chats])
        finally:
            await backend.aclose()
        return out, loop.time() - start

    out, elapsed = in_process(FaultConfig(latency_ms=150), go)
    assert [r.text for r in out] == [str(judge_answer([c[0].model_dump()])[0]) for c in chats]
    assert elapsed < 6 * 0.15  # sequential calls would take at least 0.9 s


def test_pointwise_request_round_trips_through_the_backend() -> None:
    """A real pointwise request (structured, with log-probs) reads back as a scored verdict."""
    principle = Principle(
        id="honesty",
        statement="Be honest.",
        rubric={k: f"level {k}" for k in range(1, 6)},
        critique_request="Critique.",
        revision_request="Revise.",
        pass_threshold=3,
    )
    case = Case(id="c1", prompt="Is the sky blue?")
    candidate = Candidate(generator="g", response="Yes, on a clear day.")
    req = build_request(
        principle, case, candidate, Style(logprobs=True, structured=True, rationale=True), seed=1
    )

    async def go(base: str, server: FaultServer) -> BackendResponse:
        backend = OpenAIBackend(options(base))
        try:
            [resp] = await backend.complete([req])
        finally:
            await backend.aclose()
        sent = server.kept[-1]["response_format"]
        assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == req.json_schema
        assert sent["json_schema"]["strict"] is True
        return resp

    resp = in_process(FaultConfig(), go)
    expected = judge_answer([m.model_dump() for m in req.messages])[0]
    assert json.loads(resp.text) == {"score": expected, "rationale": RATIONALE}
    assert resp.choice_logprobs is None  # the first token of a JSON answer is '{"', not a digit
    reading = read_score(resp, principle.scale_max, structured=True)
    assert (reading.score, reading.rationale) == (float(expected), RATIONALE)


def test_a_new_event_loop_gets_a_new_pool() -> None:
    """The engine or a test may call asyncio.run twice; the backend must not reuse a dead loop's
    session."""
    with start_fault_server() as server:
        backend = OpenAIBackend(options(server.base_url))
        for _ in range(2):
            [resp] = asyncio.run(backend.complete([request(max_tokens=1)]))
            assert resp.text
        asyncio.run(backend.aclose())


def _canned(status: int, body: str) -> JudgeError:
    """The JudgeError a call raises against a server that always answers ``status`` with
    ``body``."""

    async def handler(_: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type="application/json")

    async def go() -> JudgeError:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            with pytest.raises(JudgeError) as info:
                await _complete_with(
                    OpenAIBackend(options(f"http://127.0.0.1:{port}/v1")), request()
                )
            return info.value
        finally:
            await runner.cleanup()

    return asyncio.run(go())


@pytest.mark.parametrize(
    "body",
    [
        '{"object": "list"}',
        '{"choices": []}',
        '{"choices": ["x"]}',
        '{"choices": [{"message": "x"}]}',
        "[1, 2]",
        '{"choices": [{"message": {"content": "3"}}], "usage": {"prompt_tokens": "many"}}',
    ],
)
def test_a_200_that_is_not_a_completion_is_transient_malformed(body: str) -> None:
    exc = _canned(200, body)
    assert isinstance(exc, TransientJudgeError) and exc.cause == "malformed"


@pytest.mark.parametrize(
    ("status", "body", "shown"),
    [
        (
            404,
            '{"object": "error", "message": "The model `x` does not exist.", "code": 404}',
            "does not exist",
        ),
        (422, '{"detail": "field required"}', "field required"),
        (403, "<html>Forbidden</html>", "Forbidden"),
    ],
)
def test_client_errors_show_the_servers_words(status: int, body: str, shown: str) -> None:
    exc = _canned(status, body)
    assert type(exc) is JudgeError
    assert f"HTTP {status}" in str(exc) and shown in str(exc)


@pytest.mark.parametrize(
    ("status", "cause"), [(502, "5xx"), (503, "5xx"), (408, "timeout"), (429, "429")]
)
def test_retryable_statuses(status: int, cause: str) -> None:
    exc = _canned(status, "{}")
    assert isinstance(exc, TransientJudgeError) and exc.cause == cause
    assert exc.retry_after is None


# --------------------------------------------------------------------------- log-prob and header
# parsing


def test_read_choice_logprobs_keeps_the_best_variant() -> None:
    content = [
        {
            "token": " 4",
            "logprob": -0.2,
            "top_logprobs": [
                {"token": " 4", "logprob": -0.2},
                {"token": "4", "logprob": -1.5},
                {"token": "\n3", "logprob": -2.0},
                {"token": "3", "logprob": -3.0},
                {"token": "Score", "logprob": -4.0},
                {"token": "2", "logprob": "bad"},
            ],
        }
    ]
    assert read_choice_logprobs({"content": content}, SCALE) == {"4": -0.2, "3": -2.0}


def test_read_choice_logprobs_legacy_and_missing() -> None:
    assert read_choice_logprobs({"top_logprobs": [{"1": -0.1, " 2": -2.0}]}, SCALE) == {
        "1": -0.1,
        "2": -2.0,
    }
    assert read_choice_logprobs(None, SCALE) is None
    assert read_choice_logprobs({"content": []}, SCALE) is None
    assert (
        read_choice_logprobs(
            {"content": [{"token": "{", "logprob": 0.0, "top_logprobs": []}]}, SCALE
        )
        is None
    )


def test_parse_retry_after_forms() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"Retry-After": "0.25"}) == 0.25
    assert parse_retry_after({"Retry-After": "-3"}) == 0.0
    assert parse_retry_after({"Retry-After": "Wed, 01 Jan 2025 12:00:07 GMT"}, now=now) == 7.0
    assert parse_retry_after({"Retry-After": "Wed, 01 Jan 2025 11:00:00 GMT"}, now=now) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after-ms": "1500", "Retry-After": "2"}) == 1.5


# --------------------------------------------------------------------------- faults (separate
# process)


@pytest.fixture(scope="module")
def fault_server() -> Iterator[RunningServer]:
    """One server process for the module; each test sets its own fault rates through /config."""
    with start_fault_server(latency_ms=0, hang_s=3, api_key=FAKE_KEY) as server:
        yield server


@pytest.fixture
def server(fault_server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> RunningServer:
    """The shared server, healthy and with zeroed counts; the backend's key variable is set."""
    fault_server.configure(
        **{f"rate_{f}": 0.0 for f in ("429", "500", "hang", "drop", "malformed", "truncated")},
        retry_after_s=0.1,
        retry_after_format="seconds",
    )
    fault_server.reset()
    monkeypatch.setenv(KEY_VAR, FAKE_KEY)
    return fault_server


def keyed(**kw: Any) -> dict[str, Any]:
    return {"api_key_env": KEY_VAR, **kw}


FAULT_CASES = [
    ("429", "429"),
    ("500", "5xx"),
    ("hang", "timeout"),
    ("drop", "connection"),
    ("malformed", "malformed"),
    ("truncated", "malformed"),
]


@pytest.mark.parametrize(("fault", "cause"), FAULT_CASES)
def test_each_fault_raises_a_transient_error_with_its_cause(
    server: RunningServer, fault: str, cause: str
) -> None:
    server.configure(**{f"rate_{fault}": 1.0})
    exc = failure(server.base_url, timeout_s=0.3, **keyed())
    assert isinstance(exc, TransientJudgeError)
    assert exc.cause == cause
    assert server.base_url in str(exc)
    assert server.stats()[fault] == 1


def test_retry_after_seconds_is_parsed(server: RunningServer) -> None:
    server.configure(rate_429=1.0, retry_after_s=0.35)
    exc = failure(server.base_url, **keyed())
    assert isinstance(exc, TransientJudgeError)
    assert exc.retry_after == 0.35


def test_retry_after_http_date_is_parsed(server: RunningServer) -> None:
    server.configure(rate_429=1.0, retry_after_s=3, retry_after_format="date")
    exc = failure(server.base_url, **keyed())
    assert isinstance(exc, TransientJudgeError) and exc.retry_after is not None
    assert 1.0 <= exc.retry_after <= 3.0  # HTTP-dates have whole-second resolution


def test_connection_refused_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connecting is refused
        exc = failure(f"http://127.0.0.1:{port}/v1", timeout_s=2)
    assert isinstance(exc, TransientJudgeError) and exc.cause == "connection"


def test_a_bad_request_is_not_retried_and_shows_the_server_message(server: RunningServer) -> None:
    exc = failure(
        server.base_url,
        request(choices=SCALE),
        judge="strict",
        top_logprobs=20,
        extra_body={"top_logprobs": 50},
        **keyed(),
    )
    assert type(exc) is JudgeError
    assert "HTTP 400" in str(exc) and "top_logprobs must be between 0 and 20" in str(exc)
    assert "'strict'" in str(exc)


def test_ok_after_faults_clear(server: RunningServer) -> None:
    [resp] = asyncio.run(
        _complete_with(OpenAIBackend(options(server.base_url, **keyed())), request(choices=SCALE))
    )
    assert resp.choice_logprobs == pytest.approx(judge_answer(CHAT_DICTS)[1])


def test_mixed_faults_add_up_with_the_server_counts(server: RunningServer) -> None:
    """Every call ends as a response or a transient error, and each cause matches the server's
    count."""
    server.configure(
        rate_429=0.1,
        rate_500=0.1,
        rate_hang=0.03,
        rate_drop=0.05,
        rate_malformed=0.05,
        rate_truncated=0.05,
    )

    async def go() -> Counter[str]:
        backend = OpenAIBackend(options(server.base_url, timeout_s=0.4, **keyed()))
        seen: Counter[str] = Counter()

        async def one(i: int) -> None:
            try:
                await backend.complete(
                    [BackendRequest(messages=[Message(role="user", content=f"#{i}")])]
                )
                seen["ok"] += 1
            except TransientJudgeError as exc:
                seen[exc.cause] += 1

        try:
            await asyncio.gather(*(one(i) for i in range(200)))
        finally:
            await backend.aclose()
        return seen

    seen = asyncio.run(go())
    stats = server.stats()
    assert sum(seen.values()) == stats["requests"] == 200
    assert seen["ok"] == stats["ok"]
    assert (seen["429"], seen["5xx"], seen["timeout"], seen["connection"]) == (
        stats["429"],
        stats["500"],
        stats["hang"],
        stats["drop"],
    )
    assert seen["malformed"] == stats["malformed"] + stats["truncated"]


# --------------------------------------------------------------------------- secrets


def test_missing_key_names_the_variable_and_judge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VAR, raising=False)
    with pytest.raises(MissingSecret, match=KEY_VAR) as info:
        OpenAIBackend(options(**keyed()), judge="gpt-judge")
    assert "gpt-judge" in str(info.value)
    monkeypatch.setenv(KEY_VAR, "  ")
    with pytest.raises(MissingSecret, match=KEY_VAR):
        OpenAIBackend(options(**keyed()))


def test_no_key_variable_sends_no_authorization(server: RunningServer) -> None:
    exc = failure(server.base_url)  # the server wants a key; none is configured or sent
    assert type(exc) is JudgeError and "HTTP 401" in str(exc)


def _exception_text(exc: BaseException) -> str:
    return "\n".join([str(exc), repr(exc), *map(str, exc.args), *traceback.format_exception(exc)])


def test_the_key_never_leaks(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Trigger every error path with a recognisable key; it must appear in no message, repr or
    result."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    for fault, _ in FAULT_CASES:
        server.configure(**{f"rate_{f}": 0.0 for f, _ in FAULT_CASES})
        server.configure(**{f"rate_{fault}": 1.0})
        texts.append(_exception_text(failure(server.base_url, judge="j", timeout_s=0.3, **keyed())))
    server.configure(**{f"rate_{f}": 0.0 for f, _ in FAULT_CASES})
    texts.append(
        _exception_text(
            failure(server.base_url, judge="j", extra_body={"top_logprobs": 99}, **keyed())
        )
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        texts.append(
            _exception_text(failure(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", **keyed()))
        )

    # A server that echoes a wrong key in its 401 text: the backend must scrub it.
    monkeypatch.setenv(KEY_VAR, FAKE_KEY + "-wrong")
    echoed = failure(server.base_url, judge="j", **keyed())
    assert "HTTP 401" in str(echoed) and "***" in str(echoed)
    texts.append(_exception_text(echoed))
    monkeypatch.setenv(KEY_VAR, FAKE_KEY)

    backend = OpenAIBackend(options(server.base_url, **keyed()), judge="j")
    [resp] = asyncio.run(_complete_with(backend, request(choices=SCALE, max_tokens=8)))
    texts += [
        resp.model_dump_json(),
        repr(resp),
        repr(backend),
        json.dumps(backend.identity()),
        repr(backend.options),
        caplog.text,
        json.dumps(server.requests()),
    ]
    assert resp.choice_logprobs
    for text in texts:
        assert FAKE_KEY not in text
