"""The ``openai`` backend: any OpenAI-compatible chat-completions server (vLLM, llama.cpp, Ollama,
OpenAI).

One :class:`aiohttp.ClientSession` per backend instance is the connection pool for its endpoint.
aiohttp rather than httpx because issue 6 measured httpx 0.28 at 6-21 ms CPU per call under high
concurrency (its pool rescans every connection per request) against about 0.3 ms for aiohttp.

The backend raises, it never retries; the engine owns retries and backoff. Failures map to:

======================================  ===========================================================
what happened                           exception ======================================
=========================================================== HTTP 429
``TransientJudgeError(cause="429", retry_after=seconds)`` HTTP 5xx
``TransientJudgeError(cause="5xx")`` HTTP 408, or no answer within timeout
``TransientJudgeError(cause="timeout")`` refused, reset, disconnected, cut body
``TransientJudgeError(cause="connection")`` TLS / certificate failure               ``JudgeError``
(not retried) 200 whose body is not a completion      ``TransientJudgeError(cause="malformed")``
other 4xx (bad request, auth, model)    ``JudgeError`` with the server's message (not retried) API
key variable unset                  ``MissingSecret`` naming the variable
======================================  ===========================================================

A 200 with a body that is not JSON, or JSON without ``choices``, is *transient*: in practice it is a
flaky proxy or a connection cut mid-body, and a second try usually succeeds. The judge's *answer*
being the wrong shape (bad JSON inside ``content``) is a different thing, found later by the judging
strategy.

The API key is read from the environment variable named by ``api_key_env`` when the backend is
built. It is sent only in the Authorization header, and scrubbed from every message this module
produces and from every answer it returns (servers sometimes echo the key they were given).
Credentials in
``base_url`` (``user:password@``, secret query values) are sent as written but shown redacted
everywhere else; a query string in ``base_url`` (Azure's ``?api-version=``) stays a query after the
endpoint path.

Where the server lists the model with identifying details (``GET /models``: vLLM's ``root``,
llama.cpp's ``meta``, a ``fingerprint`` or ``revision`` field), :meth:`OpenAIBackend.probe` reads
them before planning and they join the cache key, as does a user-set ``revision``: a model swapped
behind the same name does not reuse the old model's verdicts.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import json
import math
import os
import time
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.backends.base import Backend, BackendRequest, BackendResponse
from harness.credentials import (
    SecretUse,
    endpoint,
    redact_url,
    scrub,
    url_secrets,
    without_userinfo,
)
from harness.errors import ConfigError, JudgeError, MissingSecret, TransientJudgeError

#: Name sent with a structured-output request (OpenAI requires one; its value does not matter).
SCHEMA_NAME = "judgment"
#: How much of a server's error text is kept in an exception message.
MAX_ERROR_TEXT = 500
#: Fields of a ``GET /models`` entry that identify the weights behind a name (never timestamps or
#: ids that change per request, such as vLLM's ``created`` or ``permission``).
FINGERPRINT_FIELDS = (
    "root",
    "parent",
    "meta",
    "fingerprint",
    "revision",
    "digest",
    "max_model_len",
)


class OpenAIBackend(Backend):
    """Chat completions over HTTP against an OpenAI-compatible server."""

    name = "openai"

    class Options(BaseModel):
        """Options of an ``openai`` judge config."""

        model_config = ConfigDict(extra="forbid")

        base_url: str = Field(
            description="Server base URL including the API prefix, e.g. http://127.0.0.1:8000/v1."
        )
        model: str = Field(
            description="Model name the server knows, e.g. 'gpt-4o-mini' or 'qwen2.5-7b-instruct'."
        )
        api_key_env: str | None = Field(
            default=None,
            description="NAME of the environment variable holding the API key (never the key itself); "
            "null for servers that need no key, such as a local vLLM or llama.cpp.",
        )
        temperature: float | None = Field(
            default=None,
            ge=0,
            description="Sampling temperature; null uses the judge strategy's (0 by default).",
        )
        max_tokens: int = Field(
            default=1024, ge=1, description="Upper bound on tokens generated per call."
        )
        logprobs: bool = Field(
            default=True,
            description="Ask for top_logprobs when a judge reads a score distribution; turn off for servers that "
            "reject the parameter.",
        )
        top_logprobs: int = Field(
            default=20, ge=1, le=20, description="How many alternatives per token to ask for."
        )
        structured_output: bool = Field(
            default=True,
            description="Send response_format json_schema (strict) when the judge asks for JSON output; turn off "
            "for servers without schema-constrained decoding.",
        )
        response_format: Literal["json_schema", "json_object"] = Field(
            default="json_schema",
            description="How to ask for schema-constrained JSON: OpenAI's json_schema form (OpenAI, vLLM, Ollama) "
            "or {type: json_object, schema} (llama-cpp-python's server, which answers json_schema with a 500).",
        )
        timeout_s: float = Field(
            default=120.0, gt=0, description="Seconds to wait for one whole call."
        )
        extra_body: dict[str, Any] = Field(
            default_factory=dict,
            description="Merged into every request body last (shallow), e.g. {'top_k': 1} or vendor-specific keys.",
        )
        revision: str | None = Field(
            default=None,
            description="Your name for the exact weights behind 'model' (a commit, a date); it "
            "joins the cache key, so changing it re-judges instead of reusing old verdicts.",
        )
        fingerprint: bool = Field(
            default=True,
            description="Read the model's details from GET /models before judging and let them "
            "join the cache key, where the server gives any (vLLM, llama.cpp).",
        )

        @field_validator("base_url")
        @classmethod
        def _http_url(cls, url: str) -> str:
            if (
                not url.startswith(("http://", "https://"))
                or len(url.split("://", 1)[1].strip("/")) == 0
            ):
                raise ValueError(
                    "must be an http:// or https:// URL such as http://127.0.0.1:8000/v1"
                )
            return url

    options: Options

    def __init__(self, options: BaseModel, *, judge: str | None = None):
        """``judge`` names the judge config in error messages (e.g. a missing key)."""
        if not isinstance(options, OpenAIBackend.Options):
            options = OpenAIBackend.Options.model_validate(options.model_dump())
        super().__init__(options)
        self._judge = judge
        base = self.options.base_url
        self._url = endpoint(without_userinfo(base), "chat/completions")
        basic = _basic_credentials(base)
        self._key = _read_key(self.options.api_key_env, judge)
        if self._key and basic:
            raise ConfigError(
                f"judge {judge or '?'}: base_url carries user:password and api_key_env is set; "
                "a server takes one Authorization header: keep one of them"
            )
        self._authorization = f"Bearer {self._key}" if self._key else basic and f"Basic {basic}"
        #: Every secret this backend holds, scrubbed from every message and answer it produces
        #: (Basic credentials also as the base64 a server would echo).
        self.secrets = [s for s in (self._key, basic, *url_secrets(base)) if s]
        #: The server's identifying details of the model (see :meth:`probe`); None until probed.
        self.server_fingerprint: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        url = redact_url(self.options.base_url)
        return f"OpenAIBackend(base_url={url!r}, model={self.options.model!r})"

    def identity(self) -> dict[str, Any]:
        """Options that change answers, the user's revision and the server's model fingerprint.

        The URL is redacted (rotating a password keeps the cache); ``revision`` and the
        fingerprint join only when there are any.
        """
        found = super().identity()
        found["base_url"] = redact_url(self.options.base_url)
        for unset in ("revision", "fingerprint"):
            found.pop(unset, None)
        if self.options.revision is not None:
            found["revision"] = self.options.revision
        if self.server_fingerprint is not None:
            found["server_fingerprint"] = self.server_fingerprint
        return found

    @classmethod
    def secret_uses(cls, options: BaseModel, judge: str) -> list[SecretUse]:
        """The API key variable, and credentials written into ``base_url``, with where they go."""
        assert isinstance(options, OpenAIBackend.Options)
        url = redact_url(options.base_url)
        uses = [SecretUse(judge, url, options.api_key_env)] if options.api_key_env else []
        if url_secrets(options.base_url):
            uses.append(SecretUse(judge, url))
        return uses

    def reads_logprobs(self) -> bool:
        """Read the score distribution from top log-probs (soft labels) when ``logprobs`` is on."""
        return self.options.logprobs

    def structured(self) -> bool:
        """Ask for schema-constrained JSON when log-probs are off (a JSON answer cannot start with a
        digit).
        """
        return self.options.structured_output and not self.options.logprobs

    @classmethod
    def volatile_options(cls) -> set[str]:
        """The key's variable name and the timeout never change an answer."""
        return {"api_key_env", "timeout_s"}

    # -- session

    def _get_session(self) -> aiohttp.ClientSession:
        """The pool for this endpoint, created inside the running loop on first use."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            # A session is bound to its loop; a new loop (a second asyncio.run) needs a new one.
            headers = {"Content-Type": "application/json"}
            if self._authorization:
                headers["Authorization"] = self._authorization
            # limit=0: no pool cap here; the engine bounds concurrency per judge.
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.options.timeout_s),
                raise_for_status=False,
            )
            self._session_loop = loop
        return self._session

    async def aclose(self) -> None:
        """Close the connection pool (if it belongs to the running loop)."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is self._session_loop:
                await session.close()

    # -- calls

    async def complete(self, requests: list[BackendRequest]) -> list[BackendResponse]:
        """Answer each request with one HTTP call; a batch runs concurrently. Raises the first
        failure.
        """
        if len(requests) == 1:
            return [await self._call(requests[0])]
        results = await asyncio.gather(*(self._call(r) for r in requests), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, BackendResponse)]

    def request_body(self, request: BackendRequest) -> dict[str, Any]:
        """The JSON body sent for ``request``."""
        opts = self.options
        body: dict[str, Any] = {
            "model": opts.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            # Servers reject max_tokens=0; a log-probs-only request still needs the first token
            # generated.
            "max_tokens": min(max(1, request.max_tokens), opts.max_tokens),
            "temperature": request.temperature if opts.temperature is None else opts.temperature,
            "seed": request.seed,
        }
        if request.choices and opts.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = opts.top_logprobs
        if request.json_schema is not None and opts.structured_output:
            body["response_format"] = self._response_format(request.json_schema)
        body.update(opts.extra_body)
        return body

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.options.response_format == "json_object":
            return {"type": "json_object", "schema": schema}
        return {
            "type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": True},
        }

    async def _call(self, request: BackendRequest) -> BackendResponse:
        body = self.request_body(request)
        start = time.perf_counter()
        status, headers, raw = await self._post(body)
        latency = time.perf_counter() - start
        if not 200 <= status < 300:
            raise self._http_error(status, headers, raw)
        data = self._decode(raw)
        return self._response(data, request, latency)

    async def _post(self, body: dict[str, Any]) -> tuple[int, Any, bytes]:
        """POST the body; returns (status, headers, raw body). Transport failures become transient
        errors.
        """
        session = self._get_session()
        payload = json.dumps(body).encode()
        try:
            async with session.post(self._url, data=payload) as resp:
                return resp.status, resp.headers, await resp.read()
        except TimeoutError:
            # Before ClientConnectionError: aiohttp's ServerTimeoutError is both.
            raise TransientJudgeError(
                self._msg(f"no answer within {self.options.timeout_s:g}s"), cause="timeout"
            ) from None
        except aiohttp.ClientSSLError as exc:
            # A certificate or TLS mismatch will not fix itself on retry.
            raise JudgeError(self._msg(f"TLS failed: {type(exc).__name__}: {exc}")) from None
        except aiohttp.ClientError as exc:
            # Refused, reset, disconnected, body cut short, unparsable HTTP: the transport, not the
            # judge. from None: chained aiohttp objects carry request details; the message keeps
            # what matters.
            raise TransientJudgeError(
                self._msg(f"connection failed: {type(exc).__name__}: {exc}"), cause="connection"
            ) from None

    # -- mapping

    def _response(
        self, data: dict[str, Any], request: BackendRequest, latency: float
    ) -> BackendResponse:
        """Map a completion object onto a BackendResponse; an odd shape is a transient
        ``malformed``.
        """
        try:
            choice = data["choices"][0]
            message = choice.get("message") or {}
            content = message.get("content")
            usage = data.get("usage") or {}
            return BackendResponse(
                # A server may echo the key it was sent: never let it reach cache or verdicts.
                text=scrub(content, self.secrets) if isinstance(content, str) else "",
                choice_logprobs=(
                    read_choice_logprobs(choice.get("logprobs"), request.choices)
                    if request.choices and self.options.logprobs
                    else None
                ),
                tokens_in=int(usage.get("prompt_tokens") or 0),
                tokens_out=int(usage.get("completion_tokens") or 0),
                latency_s=latency,
            )
        except (AttributeError, TypeError, ValueError) as exc:
            raise TransientJudgeError(
                self._msg(
                    f"server answered 200 with an unexpected completion shape: {type(exc).__name__}: {exc}"
                ),
                cause="malformed",
            ) from None

    def _decode(self, raw: bytes) -> dict[str, Any]:
        """The completion object, or a transient ``malformed`` error if the body is not one."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise TransientJudgeError(
                self._msg(
                    f"server answered 200 with a body that is not JSON ({len(raw)} bytes): "
                    f"{_snippet(raw)}"
                ),
                cause="malformed",
            ) from None
        choices = data.get("choices") if isinstance(data, dict) else None
        if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)):
            raise TransientJudgeError(
                self._msg(f"server answered 200 without choices: {_snippet(raw)}"),
                cause="malformed",
            )
        return data

    def _http_error(self, status: int, headers: Any, raw: bytes) -> JudgeError:
        detail = _server_message(raw)
        if status == 429:
            return TransientJudgeError(
                self._msg(f"HTTP 429 rate limited: {detail}"),
                cause="429",
                retry_after=parse_retry_after(headers),
            )
        if status >= 500:
            return TransientJudgeError(self._msg(f"HTTP {status}: {detail}"), cause="5xx")
        if status == 408:
            return TransientJudgeError(self._msg(f"HTTP 408: {detail}"), cause="timeout")
        return JudgeError(self._msg(f"HTTP {status}: {detail}"))

    def _msg(self, text: str) -> str:
        """An error message naming the endpoint, with the key scrubbed out."""
        who = f"judge {self._judge!r} " if self._judge else ""
        message = f"{who}openai backend at {redact_url(self.options.base_url)}: {text}"
        return scrub(message, self.secrets)

    # -- the model's fingerprint

    async def probe(self) -> str | None:
        """Read the model's details from ``GET /models`` into :attr:`server_fingerprint`.

        None (and no fingerprint) when the server gives none, does not list the model, or cannot be
        reached: the run then goes on keyed by name and ``revision`` only. Uses its own short-lived
        connection, so it can run before (and outside) the judging loop.
        """
        if not self.options.fingerprint:
            return None
        headers = {"Authorization": self._authorization} if self._authorization else {}
        timeout = aiohttp.ClientTimeout(total=min(10.0, self.options.timeout_s))
        url = endpoint(without_userinfo(self.options.base_url), "models")
        try:
            async with (
                aiohttp.ClientSession(headers=headers, timeout=timeout) as s,
                s.get(url) as resp,
            ):
                data = await resp.json(content_type=None) if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        self.server_fingerprint = model_fingerprint(data, self.options.model)
        return self.server_fingerprint


# --------------------------------------------------------------------------- helpers


def model_fingerprint(listing: Any, model: str) -> str | None:
    """A hash of the identifying fields of ``model``'s entry in a ``GET /models`` answer, if any."""
    entries = listing.get("data") if isinstance(listing, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("id") == model:
            found = {k: entry[k] for k in FINGERPRINT_FIELDS if entry.get(k) not in (None, "", {})}
            if not found:
                return None
            text = json.dumps(found, sort_keys=True, default=str)
            return hashlib.sha256(text.encode()).hexdigest()[:16]
    return None


def _basic_credentials(url: str) -> str | None:
    """The base64 of Basic credentials written into the URL (``user:password@host``), if any."""
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return None
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    return base64.b64encode(pair.encode("utf-8")).decode("ascii")


def _read_key(variable: str | None, judge: str | None) -> str | None:
    """The API key from the environment, or MissingSecret naming the variable."""
    if variable is None:
        return None
    key = os.environ.get(variable, "").strip()
    if not key:
        who = f"judge {judge!r}" if judge else "an openai judge"
        raise MissingSecret(
            f"{who} reads its API key from the environment variable {variable}, which is unset or empty; "
            f"export {variable}=... or set options.api_key_env to null for a server that needs no key"
        )
    return key


def read_choice_logprobs(logprobs: Any, choices: list[str]) -> dict[str, float] | None:
    """Log P(choice) at the first generated token, for each choice the server listed.

    Tokens are compared after stripping whitespace (" 3" and "3" both count for "3"), keeping the
    most likely variant. Reads OpenAI's chat format (``content[0].top_logprobs``) and the legacy
    completions format (``top_logprobs[0]`` as a token -> logprob map). None when no choice appears.
    """
    if not isinstance(logprobs, dict):
        return None
    wanted = set(choices)
    found: dict[str, float] = {}
    for token, logprob in _first_token_alternatives(logprobs):
        key = token.strip()
        if key not in wanted or not isinstance(logprob, int | float) or math.isnan(logprob):
            continue
        found[key] = max(float(logprob), found.get(key, -math.inf))
    return found or None


def _first_token_alternatives(logprobs: dict[str, Any]) -> list[tuple[str, Any]]:
    content = logprobs.get("content")
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0]
        pairs = [(str(first.get("token", "")), first.get("logprob"))]
        for alt in first.get("top_logprobs") or []:
            if isinstance(alt, dict):
                pairs.append((str(alt.get("token", "")), alt.get("logprob")))
        return pairs
    legacy = logprobs.get("top_logprobs")
    if isinstance(legacy, list) and legacy and isinstance(legacy[0], dict):
        return [(str(t), lp) for t, lp in legacy[0].items()]
    return []


def parse_retry_after(headers: Any, now: datetime | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP-date); None if
    absent.
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        return _seconds_until(value, now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _seconds_until(http_date: str, now: datetime | None) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _server_message(raw: bytes) -> str:
    """The human part of an error body: OpenAI's error.message, vLLM's message, or the raw text."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _snippet(raw)
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return _clip(str(error["message"]))
        for key in ("error", "message", "detail"):
            if isinstance(data.get(key), str) and data[key]:
                return _clip(data[key])
    return _snippet(raw)


def _snippet(raw: bytes) -> str:
    return repr(_clip(raw.decode("utf-8", errors="replace")))


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT] + "..."
