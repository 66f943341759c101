"""What every backend implements, and how backends are found by name.

A backend only talks to a model: it turns a :class:`BackendRequest` into a :class:`BackendResponse`.
Prompt rendering, parsing, caching, retries and concurrency belong to the judge strategy and the
engine.

Backends register under the entry-point group ``harness.backends`` (``name = "module:Class"``); a
third-party package adds one the same way, with no central list to edit.
"""

from __future__ import annotations

import importlib.metadata
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.credentials import SecretUse
from harness.errors import ConfigError
from harness.records import Message

ENTRY_POINT_GROUP = "harness.backends"


class Subject(BaseModel):
    """The structured content under judgment, for backends that judge without a model (rules)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    principle: str
    response: str
    prompt: list[Message]
    scale_max: int = 5
    response_b: str | None = (
        None  # pairwise: the response shown second (``response`` is shown first)
    )


class BackendRequest(BaseModel):
    """One model call, fully rendered. Its JSON (plus the backend identity) is the cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: list[Message] = Field(description="The rendered chat.")
    choices: list[str] | None = Field(
        default=None,
        description="Read P(next token = c) for each choice from the first answer position.",
    )
    max_tokens: int = Field(default=0, description="Tokens to generate; 0 reads log-probs only.")
    temperature: float = 0.0
    json_schema: dict[str, Any] | None = Field(
        default=None, description="Ask for output matching this schema."
    )
    subject: Subject | None = Field(
        default=None, description="Raw subject, for model-free backends."
    )
    seed: int = 0


class BackendResponse(BaseModel):
    """What the model said."""

    model_config = ConfigDict(extra="forbid")

    text: str = ""
    choice_logprobs: dict[str, float] | None = Field(
        default=None,
        description="log P(choice) at the first answer position, for each requested choice it gave.",
    )
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    truncated: bool = Field(
        default=False, description="The prompt was too long and untrusted text in it was cut."
    )


class Backend(ABC):
    """A model that answers :class:`BackendRequest` batches.

    ``batch_size`` > 1 means the engine hands over several requests at once (local models batch
    them); HTTP backends take one at a time and run many concurrently.
    """

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]]
    batch_size: int = 1
    #: Same request, same answer (so retrying a malformed answer is pointless).
    deterministic: bool = False
    #: Whether the backend reads the rendered judge chat. Model-free backends (rules) judge the
    #: request's subject alone, so the chat is not rendered for them nor part of their cache keys.
    reads_prompt: bool = True
    #: Whether answers go to the persistent judge cache. A backend that answers in microseconds
    #: (rules) sets False: a cache lookup and write would cost more than the answer itself.
    cacheable: bool = True

    def __init__(self, options: BaseModel, *, judge: str | None = None):
        """``judge`` names the judge config in error messages."""
        self.options = options
        self.judge_id = judge

    def identity(self) -> dict[str, Any]:
        """Backend name plus the options that change outputs (part of every cache key)."""
        return {"backend": self.name, **self.options.model_dump(exclude=self.volatile_options())}

    @classmethod
    def volatile_options(cls) -> set[str]:
        """Options that never change an answer (timeouts, key variable names, devices)."""
        return set()

    @classmethod
    def secret_uses(cls, options: BaseModel, judge: str) -> list[SecretUse]:
        """The secrets a judge with these options would send, and where.

        Asked before the backend is built, so that the harness can refuse (or announce) them
        before any is read.
        """
        return []

    def covers(self, principle: str) -> bool:
        """Whether this backend judges the principle at all (the rules backend judges only some)."""
        return True

    def pairwise(self) -> bool:
        """Whether this backend can compare two responses (model-free backends cannot)."""
        return True

    def reads_logprobs(self) -> bool:
        """Whether to ask for log-probs over the scale tokens (a distribution, read in one pass)."""
        return False

    def structured(self) -> bool:
        """Whether to ask for a JSON answer (score and rationale) validated against a schema."""
        return False

    def size(self) -> dict[str, int]:
        """Parameter counts, when known; empty when the model was never loaded.

        ``parameters``: all weights used to judge; ``trained_parameters``: those fitted for judging
        (for a distilled student).
        """
        return {}

    @abstractmethod
    async def complete(self, requests: list[BackendRequest]) -> list[BackendResponse]:
        """Answer a batch; raise :class:`~harness.errors.JudgeError` on failure."""

    async def probe(self) -> str | None:
        """Ask the server for the model's fingerprint before planning (it joins :meth:`identity`).

        None where there is none. Backends without a server have nothing to ask.
        """
        return None

    async def aclose(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing to release
        """Release connections or memory."""


def available_backends() -> dict[str, importlib.metadata.EntryPoint]:
    """Registered backends by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def backend_class(name: str) -> type[Backend]:
    """The backend class registered under ``name``."""
    eps = available_backends()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none (is the package installed?)"
        raise ConfigError(f"unknown backend {name!r}; registered backends: {known}")
    try:
        cls = eps[name].load()
    except ImportError as exc:
        raise ConfigError(
            f"backend {name!r} could not be imported: {exc} (is its extra installed?)"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigError(f"entry point {name!r} does not name a Backend subclass")
    return cls


def parse_options(cls: type[Backend], options: dict[str, Any], where: str) -> BaseModel:
    """Validate ``options`` against the backend's own Options model."""
    try:
        return cls.Options.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(
            f"options.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{where}: backend {cls.name!r}: {problems}") from None
