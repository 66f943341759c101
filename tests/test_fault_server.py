"""The fault-injecting OpenAI-compatible test server: answers, faults, counts, and its process
wrapper."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import subprocess
import sys
from collections import Counter
from typing import Any

import aiohttp
import pytest

from harness.testing.fault_server import (
    FAULTS,
    RATIONALE,
    FaultConfig,
    FaultServer,
    completion,
    judge_answer,
    start_fault_server,
    usage_for,
)

CHAT = [
    {"role": "system", "content": "Be fair."},
    {"role": "user", "content": "Score this: hello there"},
]


async def _post(
    session: aiohttp.ClientSession, url: str, body: Any
) -> tuple[int, dict[str, str], bytes]:
    async with session.post(url + "/v1/chat/completions", json=body) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def _serve(config: FaultConfig, body: Any, calls: int = 1) -> tuple[list[Any], dict[str, int]]:
    """POST ``body`` ``calls`` times to an in-process server; returns the outcomes and the server's
    counts."""

    async def go() -> tuple[list[Any], dict[str, int]]:
        server = FaultServer(config)
        out: list[Any] = []
        async with server.running() as url, aiohttp.ClientSession() as session:
            for _ in range(calls):
                try:
                    out.append(await _post(session, url, body))
                except aiohttp.ClientError as exc:
                    out.append(exc)
        return out, server.counts

    return asyncio.run(go())


# --------------------------------------------------------------------------- configuration


def test_config_rejects_bad_rates() -> None:
    with pytest.raises(ValueError, match="lie in"):
        FaultConfig(rate_429=1.5)
    with pytest.raises(ValueError, match="add up"):
        FaultConfig(rate_429=0.6, rate_500=0.6)


def test_config_round_trips_through_flags() -> None:
    config = FaultConfig(
        latency_ms=20, rate_429=0.1, rate_hang=0.05, seed=7, api_key="k", retry_after_s=0.5
    )
    assert FaultConfig.from_argv(config.to_argv()) == config


def test_cli_rejects_bad_rate_with_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "harness.testing.fault_server", "--rate-500", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "rate" in proc.stderr


# --------------------------------------------------------------------------- answers


def test_judge_answer_is_deterministic_and_normalised() -> None:
    score, logprobs = judge_answer(CHAT)
    assert (score, logprobs) == judge_answer([dict(m) for m in CHAT])
    assert sorted(logprobs) == ["1", "2", "3", "4", "5"]
    assert math.isclose(sum(math.exp(v) for v in logprobs.values()), 1.0)
    assert max(logprobs, key=lambda k: logprobs[k]) == str(score)
    assert judge_answer([{"role": "user", "content": "something else"}]) != (score, logprobs)


def test_scores_cover_the_scale() -> None:
    scores = {judge_answer([{"role": "user", "content": f"case {i}"}])[0] for i in range(200)}
    assert scores == {1, 2, 3, 4, 5}


def test_plain_answer_is_the_digit_with_usage() -> None:
    body = completion({"messages": CHAT}, "m")
    score, _ = judge_answer(CHAT)
    assert body["choices"][0]["message"]["content"] == str(score)
    assert body["choices"][0]["logprobs"] is None
    assert body["usage"] == usage_for(CHAT, str(score))
    assert body["usage"]["prompt_tokens"] == 2 + 2 + 4


def test_logprobs_follow_openai_format() -> None:
    body = completion({"messages": CHAT, "logprobs": True, "top_logprobs": 20}, "m")
    score, logprobs = judge_answer(CHAT)
    first = body["choices"][0]["logprobs"]["content"][0]
    assert first["token"] == str(score)
    assert first["logprob"] == logprobs[str(score)]
    top = {t["token"]: t["logprob"] for t in first["top_logprobs"]}
    assert {k: top[k] for k in logprobs} == logprobs
    assert top[" " + str(score)] < top[str(score)]  # a leading-space variant, less likely
    lps = [t["logprob"] for t in first["top_logprobs"]]
    assert lps == sorted(lps, reverse=True)


def test_top_logprobs_count_is_honoured() -> None:
    body = completion({"messages": CHAT, "logprobs": True, "top_logprobs": 2}, "m")
    assert len(body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 2


def test_structured_answer_is_json() -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
    }
    body = completion(
        {"messages": CHAT, "response_format": fmt, "logprobs": True, "top_logprobs": 5}, "m"
    )
    content = json.loads(body["choices"][0]["message"]["content"])
    assert content == {"score": judge_answer(CHAT)[0], "rationale": RATIONALE}
    assert body["choices"][0]["logprobs"]["content"][0]["token"] == '{"'


# --------------------------------------------------------------------------- over HTTP, in process


def test_ok_round_trip_counts_features() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}, "strict": True}}
    [(status, _, raw)], counts = _serve(
        FaultConfig(), {"messages": CHAT, "logprobs": True, "response_format": fmt}
    )
    assert status == 200
    assert json.loads(raw)["object"] == "chat.completion"
    assert counts["requests"] == counts["ok"] == counts["logprobs"] == counts["structured"] == 1


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"messages": []}, "messages"),
        ({"messages": CHAT, "max_tokens": 0}, "max_tokens"),
        ({"messages": CHAT, "top_logprobs": 21}, "top_logprobs"),
        ("not an object", "JSON object"),
    ],
)
def test_bad_requests_get_400_with_openai_error(body: Any, needle: str) -> None:
    [(status, _, raw)], counts = _serve(FaultConfig(rate_500=1.0), body)
    assert status == 400
    assert needle in json.loads(raw)["error"]["message"]
    assert counts["bad_request"] == 1 and counts["500"] == 0  # validation happens before faults


def test_wrong_key_gets_401_echoing_it() -> None:
    async def go() -> tuple[int, bytes]:
        async with (
            FaultServer(FaultConfig(api_key="right")).running() as url,
            aiohttp.ClientSession(headers={"Authorization": "Bearer wrong-key"}) as session,
        ):
            status, _, raw = await _post(session, url, {"messages": CHAT})
            return status, raw

    status, raw = asyncio.run(go())
    assert status == 401
    assert "wrong-key" in json.loads(raw)["error"]["message"]


def test_429_carries_retry_after_seconds() -> None:
    [(status, headers, _)], counts = _serve(
        FaultConfig(rate_429=1.0, retry_after_s=0.25), {"messages": CHAT}
    )
    assert status == 429
    assert headers["Retry-After"] == "0.25"
    assert counts["429"] == 1


def test_429_can_carry_an_http_date() -> None:
    config = FaultConfig(rate_429=1.0, retry_after_s=2, retry_after_format="date")
    [(_, headers, _)], _ = _serve(config, {"messages": CHAT})
    assert headers["Retry-After"].endswith("GMT")


@pytest.mark.parametrize("fault", ["500", "drop", "malformed", "truncated"])
def test_each_fault_is_injected(fault: str) -> None:
    rate: dict[str, Any] = {f"rate_{fault}": 1.0}
    [result], counts = _serve(FaultConfig(**rate), {"messages": CHAT})
    assert counts[fault] == 1
    if fault == "drop":
        assert isinstance(result, aiohttp.ServerDisconnectedError)
        return
    status, _, raw = result
    if fault == "500":
        assert status == 500
    else:
        assert status == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(raw)


def test_hang_outlasts_client_timeout() -> None:
    async def go() -> None:
        async with (
            FaultServer(FaultConfig(rate_hang=1.0, hang_s=5)).running() as url,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.2)) as session,
        ):
            with pytest.raises(TimeoutError):
                await _post(session, url, {"messages": CHAT})

    asyncio.run(go())


def test_outcome_stream_is_seeded_and_matches_rates() -> None:
    rates: dict[str, Any] = {
        "rate_429": 0.1,
        "rate_500": 0.1,
        "rate_hang": 0.05,
        "rate_drop": 0.05,
        "rate_malformed": 0.05,
        "rate_truncated": 0.05,
    }
    a = FaultServer(FaultConfig(seed=3, **rates))
    b = FaultServer(FaultConfig(seed=3, **rates))
    draws = [a.draw() for _ in range(20_000)]
    assert draws == [b.draw() for _ in range(20_000)]
    freq = Counter(draws)
    assert abs(freq["ok"] / 20_000 - 0.6) < 0.02
    for fault in FAULTS:
        assert abs(freq[fault] / 20_000 - rates[f"rate_{fault}"]) < 0.015


def test_configure_changes_rates_but_not_identity() -> None:
    server = FaultServer(FaultConfig())
    server.configure(rate_429=1.0)
    assert server.draw() == "429"
    server.configure(rate_429=0.0)
    assert server.draw() == "ok"
    with pytest.raises(ValueError, match="cannot change"):
        server.configure(seed=4)
    with pytest.raises(ValueError, match="add up"):
        server.configure(rate_429=0.7, rate_500=0.7)


# --------------------------------------------------------------------------- as a separate process


def test_subprocess_server_counts_add_up() -> None:
    """Mixed faults over real sockets: every request is counted under exactly one outcome."""

    async def hammer(base: str, n: int) -> Counter[str]:
        seen: Counter[str] = Counter()
        timeout = aiohttp.ClientTimeout(total=0.5)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def one(i: int) -> None:
                body = {"messages": [{"role": "user", "content": f"item {i}"}]}
                try:
                    status, _, raw = await _post(session, base, body)
                except TimeoutError:
                    seen["hang"] += 1
                    return
                except aiohttp.ServerDisconnectedError:
                    seen["drop"] += 1
                    return
                try:
                    json.loads(raw)
                    seen[{200: "ok", 429: "429", 500: "500"}[status]] += 1
                except json.JSONDecodeError:
                    seen["bad_body"] += 1

            await asyncio.gather(*(one(i) for i in range(n)))
        return seen

    rates = dict(
        rate_429=0.1,
        rate_500=0.1,
        rate_hang=0.03,
        rate_drop=0.05,
        rate_malformed=0.05,
        rate_truncated=0.05,
    )
    with start_fault_server(latency_ms=2, hang_s=2, seed=5, **rates) as server:
        assert server.url.startswith("http://127.0.0.1:")
        seen = asyncio.run(hammer(server.url, 300))
        stats = server.stats()
    assert stats["requests"] == 300 == sum(stats[o] for o in ("ok", *FAULTS))
    for outcome in ("ok", "429", "500", "hang", "drop"):
        assert seen[outcome] == stats[outcome], outcome
    assert seen["bad_body"] == stats["malformed"] + stats["truncated"]
    assert all(stats[f] > 0 for f in FAULTS)


def test_subprocess_server_reset_requests_models_and_config() -> None:
    with start_fault_server() as server:

        async def go() -> tuple[int, Any, int]:
            async with aiohttp.ClientSession() as session:
                async with session.get(server.base_url + "/models") as resp:
                    models = await resp.json()
                status, _, _ = await _post(session, server.url, {"messages": CHAT})
                server.configure(rate_500=1.0)
                status500, _, _ = await _post(session, server.url, {"messages": CHAT})
                return status, models, status500

        status, models, status500 = asyncio.run(go())
        assert (status, status500) == (200, 500)
        assert models["data"][0]["id"] == "fault-judge"
        assert server.requests()[-1] == {"messages": CHAT}
        server.reset()
        assert server.stats()["requests"] == 0
        assert server.requests() == []


def test_start_fault_server_reports_a_failed_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The port is in use, so the child fails to bind; the helper raises with the child's stderr.
        with (
            pytest.raises(RuntimeError, match=r"(?s)did not start.*Address already in use"),
            start_fault_server(port=port),
        ):
            pass
