"""The ``rules`` backend: deterministic checks declared in YAML, no model.

Each rule belongs to one principle and gives a score when it fires. A response's score on a
principle is the lowest score among the rules that fired (the worst violation), or the principle's
``default_score``
when none fired. Principles with no rules are not judged by this backend at all.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from collections.abc import Callable
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
        description="regex: pattern matches; keywords: any keyword present (caseless by Unicode "
        "casefolding, whole words); "
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


#: A batch with at most this many characters of responses is checked without a worker thread (its
#: regexes take a few milliseconds at most).
INLINE_CHARS = 65_536

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")

Check = Callable[[str], bool]


def _repeats(text: str, limit: int) -> bool:
    """Whether a sentence (over 8 characters) occurs ``limit`` times; one counting pass, linear."""
    counts: dict[str, int] = {}
    # Lower-casing the whole text first splits it the same way (only letters change) at a
    # fraction of the cost of lower-casing each sentence.
    for part in _SENTENCE_END.split(text.lower()):
        sentence = part.strip()
        if len(sentence) > 8:
            n = counts[sentence] = counts.get(sentence, 0) + 1
            if n >= limit:
                return True
    return False


def _length_check(rule: Rule) -> Check:
    low, high = rule.min_chars, rule.max_chars

    def outside(text: str) -> bool:
        n = len(text.strip())
        return (low is not None and n < low) or (high is not None and n > high)

    return outside


# The keywords of a response's rules are matched against its casefolded text, computed once for all
# of them (a response is checked against every principle, one item after another).
_fold = functools.lru_cache(maxsize=256)(str.casefold)
_WORD = re.compile(r"\w")


def _keywords_check(keywords: list[str]) -> Check:
    r"""Some keyword occurs as a whole word, caselessly (Unicode casefolding).

    One case-sensitive alternation over the casefolded text, with no leading word boundary: the
    regex engine then scans for the keywords' first letters at C speed, where a leading ``\b``
    (or IGNORECASE) makes it try every branch at every position, about three times slower. The
    leading boundary is checked by hand at each candidate instead.
    """
    words = "|".join(re.escape(k.casefold()) for k in keywords)
    find = re.compile(rf"(?:{words})\b").search

    def present(text: str) -> bool:
        folded = _fold(text)
        found = find(folded)
        while found is not None:
            start = found.start()
            if _is_word(folded, start - 1) != _is_word(folded, start):
                return True
            found = find(folded, start + 1)
        return False

    return present


def _is_word(text: str, at: int) -> bool:
    r"""Whether ``text[at]`` is a word character (``\w``); outside the text it is not."""
    return at >= 0 and _WORD.match(text, at) is not None


def compile_rule(rule: Rule) -> Check:
    """The rule's check (before ``negate``) as one function, its regexes compiled once."""
    if rule.kind == "regex":
        return re.compile(rule.pattern or "", re.I | re.S).search  # type: ignore[return-value]
    if rule.kind == "keywords":
        return _keywords_check(rule.keywords)
    if rule.kind == "length":
        return _length_check(rule)
    if rule.kind == "refusal":
        return is_refusal
    return functools.partial(_repeats, limit=rule.max_repeats)


def matches(rule: Rule, text: str) -> bool:
    """Whether the rule's check matches ``text`` (before ``negate``)."""
    return bool(compile_rule(rule)(text))


class RulesBackend(Backend):
    """Scores responses with declared rules; answers in the structured-judge JSON shape."""

    name = "rules"
    deterministic = True
    reads_prompt = False  # the subject (principle, response) is all a rule looks at
    cacheable = False  # the rules answer faster than the cache could look the answer up
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

    def __init__(self, options: BaseModel, *, judge: str | None = None):
        super().__init__(options, judge=judge)
        # Each principle's rules with their compiled checks, in declared order, built once.
        self._checks: dict[str, list[tuple[Rule, Check]]] = {}
        for r in self.options.rules:
            self._checks.setdefault(r.principle, []).append((r, compile_rule(r)))

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
        return principle in self._checks

    def judge(self, subject: Subject) -> tuple[int, str]:
        """Score and rationale for one subject."""
        text = subject.response
        checks = self._checks.get(subject.principle, [])
        fired = [r for r, check in checks if bool(check(text)) != r.negate]
        if not fired:
            score = self.options.default_score.get(subject.principle, subject.scale_max)
            return score, "No rule fired."
        worst = min(r.score for r in fired)
        why = "; ".join(f"{r.id}: {r.message or r.kind}" for r in fired)
        return min(worst, subject.scale_max), f"Rules fired: {why}."

    async def complete(self, requests: list[BackendRequest]) -> list[BackendResponse]:
        """Judged inline when the batch is small; long texts go to a worker thread.

        A worker thread for every batch would cost more than the checks themselves (the event loop
        and the thread contend for the GIL); a batch of long responses must still not stall other
        judges' calls while its regexes run.
        """
        size = sum(len(r.subject.response) for r in requests if r.subject is not None)
        if size <= INLINE_CHARS:
            return self._complete(requests)
        return await asyncio.to_thread(self._complete, requests)

    def _complete(self, requests: list[BackendRequest]) -> list[BackendResponse]:
        """Apply the rules to each request's subject; the worst fired rule gives the score."""
        out = []
        for req in requests:
            if req.subject is None:
                raise JudgeError("the rules backend needs the request's subject")
            start = time.perf_counter()
            score, why = self.judge(req.subject)
            latency = time.perf_counter() - start
            out.append(BackendResponse(text=_answer(score, why), latency_s=latency))
        return out


@functools.lru_cache(maxsize=1024)
def _answer(score: int, why: str) -> str:
    """The structured answer's text, the same as ``json.dumps`` of the dict. Remembered: a rule
    set yields few distinct (score, rationale) pairs.
    """
    return f'{{"score": {score}, "rationale": {json.dumps(why)}}}'
