"""The ``rules`` backend: deterministic checks declared in YAML, no model.

Each rule belongs to one principle and gives a score when it fires. A response's score on a
principle is the lowest score among the rules that fired (the worst violation), or the principle's
``default_score``
when none fired. Principles with no rules are not judged by this backend at all.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.backends.base import Backend, BackendRequest, BackendResponse, Subject
from harness.errors import JudgeError
from harness.refusal import is_refusal


class Rule(BaseModel):
    """One deterministic check."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Identifier shown in rationales.")
    principle: str = Field(description="The principle this rule scores.")
    kind: Literal["regex", "keywords", "length", "refusal", "repetition"] = Field(
        description="regex: pattern matches; keywords: any keyword present (case-insensitive, whole words); "
        "length: outside [min_chars, max_chars]; refusal: the response refuses; repetition: a sentence "
        "repeats at least max_repeats times."
    )
    pattern: str | None = Field(default=None, description="Regular expression, for kind regex.")
    keywords: list[str] = Field(
        default_factory=list, description="Words or phrases, for kind keywords."
    )
    min_chars: int | None = Field(
        default=None, description="For kind length: shorter than this fires."
    )
    max_chars: int | None = Field(
        default=None, description="For kind length: longer than this fires."
    )
    max_repeats: int = Field(
        default=3, description="For kind repetition: this many copies of a sentence fires."
    )
    negate: bool = Field(default=False, description="Fire when the check does NOT match.")
    score: int = Field(ge=1, description="Score given when the rule fires.")
    message: str = Field(default="", description="Explanation shown when the rule fires.")

    @model_validator(mode="after")
    def _needs(self) -> Rule:
        if self.kind == "regex":
            if not self.pattern:
                raise ValueError("a regex rule needs 'pattern'")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"invalid regex {self.pattern!r}: {exc}") from None
        if self.kind == "keywords" and not self.keywords:
            raise ValueError("a keywords rule needs 'keywords'")
        if self.kind == "length" and self.min_chars is None and self.max_chars is None:
            raise ValueError("a length rule needs 'min_chars' or 'max_chars'")
        return self


def _repeats(text: str, limit: int) -> bool:
    """Whether a sentence (over 8 characters) occurs ``limit`` times; one counting pass, linear."""
    counts: Counter[str] = Counter()
    for part in re.split(r"(?<=[.!?])\s+|\n+", text):
        sentence = part.strip().lower()
        if len(sentence) > 8:
            counts[sentence] += 1
            if counts[sentence] >= limit:
                return True
    return False


def matches(rule: Rule, text: str) -> bool:
    """Whether the rule's check matches ``text`` (before ``negate``)."""
    if rule.kind == "regex":
        return re.search(rule.pattern or "", text, re.I | re.S) is not None
    if rule.kind == "keywords":
        return any(re.search(rf"\b{re.escape(k)}\b", text, re.I) for k in rule.keywords)
    if rule.kind == "length":
        n = len(text.strip())
        too_short = rule.min_chars is not None and n < rule.min_chars
        return too_short or (rule.max_chars is not None and n > rule.max_chars)
    if rule.kind == "refusal":
        return is_refusal(text)
    return _repeats(text, rule.max_repeats)


class RulesBackend(Backend):
    """Scores responses with declared rules; answers in the structured-judge JSON shape."""

    name = "rules"
    deterministic = True
    reads_prompt = False  # the subject (principle, response) is all a rule looks at
    batch_size = 64  # cheap checks: hand them over in batches, so per-call overhead is shared

    class Options(BaseModel):
        """Options of the rules backend."""

        model_config = ConfigDict(extra="forbid")

        rules: list[Rule] = Field(min_length=1, description="The checks.")
        default_score: dict[str, int] = Field(
            default_factory=dict,
            description="Score per principle when no rule fires (default: top of the scale).",
        )

    options: Options

    def structured(self) -> bool:
        """Scores come as structured data, never as text to parse."""
        return True

    def size(self) -> dict[str, int]:
        """Declared rules have no parameters."""
        return {"parameters": 0}

    def pairwise(self) -> bool:
        """Rules score one response at a time; they cannot compare two."""
        return False

    def covers(self, principle: str) -> bool:
        """Only principles that have rules are judged."""
        return any(r.principle == principle for r in self.options.rules)

    def judge(self, subject: Subject) -> tuple[int, str]:
        """Score and rationale for one subject."""
        fired = [
            r
            for r in self.options.rules
            if r.principle == subject.principle and matches(r, subject.response) != r.negate
        ]
        if not fired:
            score = self.options.default_score.get(subject.principle, subject.scale_max)
            return score, "No rule fired."
        worst = min(r.score for r in fired)
        why = "; ".join(f"{r.id}: {r.message or r.kind}" for r in fired)
        return min(worst, subject.scale_max), f"Rules fired: {why}."

    async def complete(self, requests: list[BackendRequest]) -> list[BackendResponse]:
        """Judged in a worker thread: a long response must not stall other judges' calls."""
        return await asyncio.to_thread(self._complete, requests)

    def _complete(self, requests: list[BackendRequest]) -> list[BackendResponse]:
        """Apply the rules to each request's subject; the worst fired rule gives the score."""
        out = []
        for req in requests:
            if req.subject is None:
                raise JudgeError("the rules backend needs the request's subject")
            start = time.perf_counter()
            score, why = self.judge(req.subject)
            out.append(
                BackendResponse(
                    text=json.dumps({"score": score, "rationale": why}),
                    latency_s=time.perf_counter() - start,
                )
            )
        return out
