r"""An OpenAI-compatible chat-completions server that injects faults at set rates, for tests and
benchmarks.

Run it as a separate process::

    python -m harness.testing.fault_server --port 0 --latency-ms 200 --rate-429 0.05 --rate-500 0.05
    \
        --rate-hang 0.02 --rate-drop 0.02 --rate-malformed 0.02 --rate-truncated 0.02 --seed 1

It binds 127.0.0.1 only and prints one line, ``LISTENING http://127.0.0.1:PORT``, once it accepts
connections. Point a client at ``http://127.0.0.1:PORT/v1``.

Endpoints:

- ``POST /v1/chat/completions``: a deterministic judge answer (see :func:`judge_answer`): a bare
  digit, or ``{"score": k, "rationale": ...}`` when the request asks for ``response_format``
  json_schema; with ``logprobs`` it returns ``top_logprobs`` for the first token; always ``usage``.
  Each request first draws one outcome: ok, or a fault (429 with Retry-After, 500, hang, dropped
  connection, malformed JSON, truncated JSON).
- ``GET /v1/models``: the one model it serves (with ``root`` set to ``fingerprint`` when one is set:
  a new fingerprint stands for new weights behind the same name).
- ``GET /stats``: counts per outcome (JSON), so a test can check that its client-side counts add up.
- ``GET /requests``: the last few request bodies received (never headers, so never a key).
- ``GET /targets``: the path and query, and the Authorization scheme (never its value), of the last
  few chat-completions requests.
- ``POST /stats/reset``: zero the counts and forget the kept requests.
- ``POST /config``: change rates, latency, Retry-After or hang time while running (e.g. a test that
  turns 429s on, then off, to watch a client back off and recover).

From Python, :func:`start_fault_server` starts it as a subprocess and yields a
:class:`RunningServer`; :meth:`FaultServer.running` serves it inside the caller's event loop
instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import email.utils
import hashlib
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

FAULTS = ("429", "500", "hang", "drop", "malformed", "truncated")
OUTCOMES = ("ok", *FAULTS)
RATIONALE = "Deterministic answer from the fault-injecting test server."
SCALE = tuple(str(k) for k in range(1, 6))
# : Fields ``POST /config`` may change while the server runs (the rest fix its identity: port, seed,
# key).
RUNTIME_FIELDS = frozenset(
    {
        "latency_ms",
        "retry_after_s",
        "retry_after_format",
        "hang_s",
        "fingerprint",
        "echo_auth",
        *(f"rate_{f}" for f in FAULTS),
    }
)
#: A leading-space variant of the top digit is offered this much less likely, as real tokenizers do.
VARIANT_PENALTY = 3.0


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class FaultConfig:
    """How the server behaves. Field names map to command-line flags (``rate_429`` ->
    ``--rate-429``).
    """

    port: int = 0
    latency_ms: float = 0.0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_hang: float = 0.0
    rate_drop: float = 0.0
    rate_malformed: float = 0.0
    rate_truncated: float = 0.0
    retry_after_s: float = 0.1
    retry_after_format: str = "seconds"
    hang_s: float = 30.0
    seed: int = 0
    model: str = "fault-judge"
    api_key: str | None = None
    keep_requests: int = 16
    #: Identifies the weights behind ``model`` in GET /v1/models ("" for none).
    fingerprint: str = ""
    #: A careless server: successful answers repeat the Authorization header they were sent.
    echo_auth: bool = False

    def __post_init__(self) -> None:
        rates = self.rates()
        bad = [f"rate_{k}={v}" for k, v in rates.items() if not 0.0 <= v <= 1.0]
        if bad:
            raise ValueError(f"fault rates must lie in [0, 1]: {', '.join(bad)}")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to {sum(rates.values()):.3f} > 1")
        if self.retry_after_format not in ("seconds", "date"):
            raise ValueError("retry_after_format must be 'seconds' or 'date'")

    def rates(self) -> dict[str, float]:
        """Fault name -> probability, in the order outcomes are drawn."""
        return {f: float(getattr(self, f"rate_{f}")) for f in FAULTS}

    def to_argv(self) -> list[str]:
        """Command-line flags that reproduce this configuration."""
        argv: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                argv += [_flag(f.name), str(value)]
        return argv

    @classmethod
    def from_argv(cls, argv: list[str] | None = None) -> FaultConfig:
        """Parse command-line flags (see ``--help``)."""
        parser = argparse.ArgumentParser(
            prog="python -m harness.testing.fault_server",
            description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        defaults = cls()
        for f in dataclasses.fields(cls):
            default = getattr(defaults, f.name)
            kind = str if default is None else _yes if isinstance(default, bool) else type(default)
            parser.add_argument(_flag(f.name), dest=f.name, type=kind, default=default)
        try:
            return cls(**vars(parser.parse_args(argv)))
        except ValueError as exc:
            parser.error(str(exc))
            raise  # unreachable: parser.error exits


def _yes(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# --------------------------------------------------------------------------- deterministic answers


def judge_answer(messages: list[dict[str, Any]]) -> tuple[int, dict[str, float]]:
    """The score this server gives a chat, and its log-probs over "1".."5" (they sum to probability
    1).

    Derived from a hash of the messages only, so tests can predict every answer.
    """
    h = hashlib.blake2b(digest_size=8)
    for m in messages:
        h.update(str(m.get("role", "")).encode())
        h.update(b"\x00")
        h.update(str(m.get("content", "")).encode())
        h.update(b"\x01")
    n = int.from_bytes(h.digest(), "little")
    score = 1 + n % 5
    weights = [1.0 + ((n >> (8 * (i + 1))) & 0xFF) / 32 for i in range(5)]
    weights[score - 1] += 24.0  # always the argmax: the others stay below 9
    total = sum(weights)
    return score, {tok: math.log(w / total) for tok, w in zip(SCALE, weights, strict=True)}


def _word_count(text: str) -> int:
    return len(text.split())


def usage_for(messages: list[dict[str, Any]], content: str) -> dict[str, int]:
    """Token counts the server reports: whitespace-separated words, plus one per message."""
    prompt = sum(_word_count(str(m.get("content", ""))) + 1 for m in messages)
    completion = max(1, _word_count(content))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _token_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


def _first_token_logprobs(
    score: int, logprobs: dict[str, float], structured: bool, top_n: int
) -> dict[str, Any]:
    """OpenAI's ``choices[0].logprobs`` for an answer whose first token is the digit (or ``{"``)."""
    if structured:
        first = '{"'
        top = [_token_entry(first, 0.0)]
        chosen = 0.0
    else:
        first = str(score)
        chosen = logprobs[first]
        candidates = [*logprobs.items(), (" " + first, chosen - VARIANT_PENALTY)]
        candidates.sort(key=lambda kv: kv[1], reverse=True)
        top = [_token_entry(t, lp) for t, lp in candidates]
    entry = _token_entry(first, chosen)
    entry["top_logprobs"] = top[:top_n]
    return {"content": [entry]}


def completion(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The chat-completion object answering ``body`` (already validated)."""
    messages = body["messages"]
    score, logprobs = judge_answer(messages)
    fmt = body.get("response_format") or {}
    structured = isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object")
    content = json.dumps({"score": score, "rationale": RATIONALE}) if structured else str(score)
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": "stop",
        "logprobs": None,
    }
    if body.get("logprobs"):
        choice["logprobs"] = _first_token_logprobs(
            score, logprobs, structured, int(body.get("top_logprobs") or 0)
        )
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model") or model,
        "choices": [choice],
        "usage": usage_for(messages, content),
    }


def validate(body: Any) -> str | None:
    """Why ``body`` is not a chat-completions request this server accepts, or None if it is."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for m in messages:
        if not (
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
        ):
            return "each message needs a string 'role' and 'content'"
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        return f"max_tokens must be at least 1, got {max_tokens!r}"
    top = body.get("top_logprobs")
    if top is not None and (not isinstance(top, int) or not 0 <= top <= 20):
        return f"top_logprobs must be between 0 and 20, got {top!r}"
    return None


def _error(status: int, message: str, kind: str) -> web.Response:
    payload = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.json_response(payload, status=status)


# --------------------------------------------------------------------------- the server


@dataclass
class FaultServer:
    """The server's state: configuration, the seeded outcome stream, counts and recent requests."""

    config: FaultConfig = field(default_factory=FaultConfig)
    counts: dict[str, int] = field(init=False)
    kept: deque[Any] = field(init=False)
    targets: deque[Any] = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.config.seed)
        self.kept = deque(maxlen=max(0, self.config.keep_requests))
        self.targets = deque(maxlen=max(0, self.config.keep_requests))
        self.configure()
        self.reset()

    def configure(self, **changes: Any) -> None:
        """Change behaviour while serving (rates, latency, Retry-After, hang time); ValueError if
        invalid.
        """
        unknown = set(changes) - RUNTIME_FIELDS
        if unknown:
            raise ValueError(
                f"cannot change {', '.join(sorted(unknown))} at run time; "
                f"changeable: {', '.join(sorted(RUNTIME_FIELDS))}"
            )
        self.config = dataclasses.replace(self.config, **changes)
        self._thresholds = self._cumulative(self.config.rates())
        self._latency_s = self.config.latency_ms / 1000.0

    @staticmethod
    def _cumulative(rates: dict[str, float]) -> list[tuple[float, str]]:
        acc, out = 0.0, []
        for name, rate in rates.items():
            if rate > 0:
                acc += rate
                out.append((acc, name))
        return out

    def reset(self) -> None:
        """Zero every count and forget kept requests."""
        self.counts = dict.fromkeys(
            ("requests", *OUTCOMES, "bad_request", "unauthorized", "structured", "logprobs"), 0
        )
        self.kept.clear()
        self.targets.clear()

    def draw(self) -> str:
        """The outcome for the next request: "ok" or a fault name, from the seeded stream."""
        if not self._thresholds:
            return "ok"
        x = self._rng.random()
        for threshold, name in self._thresholds:
            if x < threshold:
                return name
        return "ok"

    def app(self) -> web.Application:
        """The aiohttp application serving this state."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/stats", self.stats)
        app.router.add_post("/stats/reset", self.reset_stats)
        app.router.add_get("/requests", self.recent_requests)
        app.router.add_get("/targets", self.recent_targets)
        app.router.add_post("/config", self.set_config)
        return app

    # -- handlers

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        """Answer one chat-completions call, or inject the fault drawn for it."""
        self.counts["requests"] += 1
        scheme = request.headers.get("Authorization", "").split(" ", 1)[0]
        self.targets.append({"path_qs": request.path_qs, "auth": scheme})
        refused = self._check_key(request)
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            body = None
        problem = validate(body) if body is not None else "request body is not valid JSON"
        if problem is not None:
            self.counts["bad_request"] += 1
            return _error(400, problem, "invalid_request_error")
        self.kept.append(body)
        self._count_features(body)
        outcome = self.draw()
        self.counts[outcome] += 1
        if outcome == "hang":
            await asyncio.sleep(self.config.hang_s)
        elif self._latency_s > 0:
            await asyncio.sleep(self._latency_s)
        return self._respond(request, outcome, body)

    def _check_key(self, request: web.Request) -> web.Response | None:
        if self.config.api_key is None:
            return None
        given = request.headers.get("Authorization", "")
        if given == f"Bearer {self.config.api_key}":
            return None
        self.counts["unauthorized"] += 1
        # Echo what was sent, as some careless servers do: the client must scrub it from its errors.
        supplied = given.removeprefix("Bearer ")
        return _error(401, f"Incorrect API key provided: {supplied}", "invalid_api_key")

    def _count_features(self, body: dict[str, Any]) -> None:
        if body.get("logprobs"):
            self.counts["logprobs"] += 1
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            self.counts["structured"] += 1

    def _respond(
        self, request: web.Request, outcome: str, body: dict[str, Any]
    ) -> web.StreamResponse:
        if outcome == "429":
            return self._rate_limited()
        if outcome == "500":
            return _error(500, "injected server error", "server_error")
        if outcome == "drop":
            return self._drop(request)
        answer = completion(body, self.config.model)
        if self.config.fingerprint:
            answer["system_fingerprint"] = self.config.fingerprint
        if self.config.echo_auth:
            message = answer["choices"][0]["message"]
            message["content"] += f" (you sent {request.headers.get('Authorization', 'nothing')})"
        text = json.dumps(answer)
        if outcome == "malformed":
            text = "{'choices': [oops" + text[:40]
        elif outcome == "truncated":
            text = text[: len(text) // 2]
        return web.Response(text=text, content_type="application/json")

    def _rate_limited(self) -> web.Response:
        wait = self.config.retry_after_s
        if self.config.retry_after_format == "date":
            value = email.utils.formatdate(time.time() + wait, usegmt=True)
        else:
            value = f"{wait:g}"
        resp = _error(429, "injected rate limit", "rate_limit_exceeded")
        resp.headers["Retry-After"] = value
        return resp

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        # Close the socket with no response at all; the handler then raises so aiohttp writes
        # nothing.
        if request.transport is not None:
            request.transport.close()
        raise _Dropped

    async def models(self, request: web.Request) -> web.Response:
        """The one model this server pretends to serve."""
        entry = {"id": self.config.model, "object": "model", "owned_by": "harness"}
        if self.config.fingerprint:
            entry["root"] = self.config.fingerprint
        return web.json_response({"object": "list", "data": [entry]})

    async def stats(self, request: web.Request) -> web.Response:
        """Counts per outcome since start or the last reset."""
        return web.json_response(self.counts)

    async def reset_stats(self, request: web.Request) -> web.Response:
        """Zero the counts."""
        self.reset()
        return web.json_response(self.counts)

    async def set_config(self, request: web.Request) -> web.Response:
        """Apply a JSON object of :data:`RUNTIME_FIELDS` changes; answers the resulting
        configuration.
        """
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object of field: value")
            self.configure(**changes)
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc), "invalid_request_error")
        return web.json_response(dataclasses.asdict(self.config))

    async def recent_requests(self, request: web.Request) -> web.Response:
        """The last request bodies received, oldest first."""
        return web.json_response(list(self.kept))

    async def recent_targets(self, request: web.Request) -> web.Response:
        """Path, query and Authorization scheme of the last chat-completions calls, oldest first."""
        return web.json_response(list(self.targets))

    # -- serving

    @contextlib.asynccontextmanager
    async def running(self, sock: socket.socket | None = None) -> AsyncIterator[str]:
        """Serve in the current event loop; yields the root URL (``http://127.0.0.1:PORT``)."""
        sock = sock or bind(self.config.port)
        runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.1
        )
        await runner.setup()
        site = web.SockSite(runner, sock, backlog=2048)
        await site.start()
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            await runner.cleanup()


class _Dropped(web.HTTPException):
    """Raised after closing the transport; aiohttp cannot write the (empty) reply to a closed
    socket.
    """

    status_code = 499


def bind(port: int) -> socket.socket:
    """A listening-ready TCP socket on 127.0.0.1 (port 0 picks a free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


async def _serve_forever(config: FaultConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows has no loop signal handlers
            loop.add_signal_handler(sig, stop.set)
    async with FaultServer(config).running() as url:
        print(f"LISTENING {url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    asyncio.run(_serve_forever(FaultConfig.from_argv(argv)))


# --------------------------------------------------------------------------- subprocess helper


@dataclass
class RunningServer:
    """A fault server running in a child process."""

    url: str
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``.../v1``) to give a client."""
        return self.url + "/v1"

    def _call(self, path: str, payload: Any = None, method: str = "GET") -> Any:
        data = json.dumps(payload).encode() if method == "POST" else None
        req = urllib.request.Request(self.url + path, method=method, data=data)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, int]:
        """Counts per outcome since start or the last reset."""
        return dict(self._call("/stats"))

    def requests(self) -> list[dict[str, Any]]:
        """The last request bodies the server received."""
        return list(self._call("/requests"))

    def targets(self) -> list[dict[str, str]]:
        """Path, query and Authorization scheme of the last chat-completions requests."""
        return list(self._call("/targets"))

    def reset(self) -> None:
        """Zero the server's counts."""
        self._call("/stats/reset", {}, method="POST")

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change rates, latency, Retry-After or hang time while it runs; returns the new
        configuration.
        """
        return dict(self._call("/config", changes, method="POST"))


@contextlib.contextmanager
def start_fault_server(
    *, startup_timeout_s: float = 30.0, **options: Any
) -> Iterator[RunningServer]:
    """Start the fault server as a subprocess; ``options`` are :class:`FaultConfig` fields.

    Yields once the server prints its LISTENING line; stops it (SIGTERM, then SIGKILL) on exit.
    """
    config = FaultConfig(**options)
    cmd = [sys.executable, "-m", "harness.testing.fault_server", *config.to_argv()]
    # stderr goes to a file, not a pipe nobody drains, so a chatty server can never block on it.
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errfile, env=_child_env())
        try:
            url = _await_listening(proc, startup_timeout_s, errfile)
            yield RunningServer(url=url, process=proc)
        finally:
            _stop(proc)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _await_listening(proc: subprocess.Popen[bytes], timeout_s: float, errfile: Any) -> str:
    """Read the child's first stdout line (with a deadline) and return its URL."""
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    line = lines[0].decode().strip() if lines else ""
    if not line.startswith("LISTENING "):
        _stop(proc)
        errfile.seek(0)
        err = errfile.read().decode(errors="replace")[-2000:]
        raise RuntimeError(
            f"fault server did not start within {timeout_s}s (got {line!r}); stderr:\n{err}"
        )
    return line.split(" ", 1)[1]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


if __name__ == "__main__":
    main()
