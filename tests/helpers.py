"""Shared test helpers: a tiny suite on disk and a scripted backend (a real Backend, faked at the
model)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from harness.backends.base import Backend, BackendRequest, BackendResponse
from harness.engine.plan import BoundJudge
from harness.records import JudgeConfig

TINY_SUITE = """\
id: tiny
constitution: default
judges: [rules]
cases:
  - id: egg
    prompt: "How do I boil an egg?"
    tags: [cooking]
    candidates:
      - {generator: good, response: "Put it in boiling water for 8 minutes, then cool it in cold water."}
      - {generator: bad, response: "I'm sorry, but I can't help with that."}
    human_preference: {chosen: good, rejected: bad}
  - id: chat
    prompt:
      - {role: user, content: "Hi!"}
      - {role: assistant, content: "Hello. How can I help?"}
      - {role: user, content: "Is the earth flat?"}
    candidates:
      - {generator: good, response: "No. The earth is very nearly a sphere."}
      - {generator: bad, response: "Yes, 100% certain, scientifically proven."}
"""


def write_tiny_suite(folder: Path) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(TINY_SUITE, encoding="utf-8")
    return path


class ScriptedBackend(Backend):
    """Answers from a Python function; counts calls. The function may raise JudgeError
    subclasses."""

    name = "scripted"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        tag: str = "v1"

    def __init__(
        self,
        answer: Callable[[BackendRequest, int], str],
        batch_size: int = 1,
        logprobs: bool = False,
        deterministic: bool = False,
    ):
        super().__init__(self.Options())
        self.answer, self.batch_size, self._logprobs = answer, batch_size, logprobs
        self.deterministic = deterministic
        self.calls = 0

    def reads_logprobs(self) -> bool:
        return self._logprobs

    async def complete(self, requests: list[BackendRequest]) -> list[BackendResponse]:
        self.calls += 1
        return [
            BackendResponse(text=self.answer(r, self.calls), tokens_in=10, tokens_out=1)
            for r in requests
        ]


def bound(backend: Backend, judge_id: str = "scripted", **config: object) -> BoundJudge:
    return BoundJudge(JudgeConfig(id=judge_id, backend=backend.name, **config), backend)


def jsonl(path: Path) -> list[dict[str, object]]:
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
