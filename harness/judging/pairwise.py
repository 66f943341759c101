"""Pairwise judging: two responses to one case compared on one principle, in a given order.

The judge answers A (first shown is better), B (second is better) or C (equally good). The
probability that the first-shown response is better counts a tie as half: ``p_first = P(A) + P(C) /
2``, normalised over the three answers. Both orders are planned by default;
:mod:`harness.analysis.pairwise` combines them.
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

import jsonschema

from harness.backends.base import BackendRequest, BackendResponse, Subject
from harness.judging.pointwise import (
    JSON_OBJECT,
    LENIENT_JSON,
    MIN_SCALE_MASS,
    SYSTEM,
    Reading,
    Style,
)
from harness.records import Candidate, Case, Message, Principle
from harness.untrusted import conversation, fence

TEMPLATE_VERSION = "pairwise-v2"
CHOICES = ["A", "B", "C"]
WINNERS = {"A": "first", "B": "second", "C": "tie"}


def output_schema() -> dict[str, Any]:
    """JSON Schema of a judge's structured pairwise answer."""
    return {
        "type": "object",
        "properties": {"winner": {"enum": ["A", "B", "tie"]}, "rationale": {"type": "string"}},
        "required": ["winner", "rationale"],
        "additionalProperties": False,
    }


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    # Built once: jsonschema.validate() re-checks the schema itself on every call (~15 ms).
    return jsonschema.Draft202012Validator(output_schema())


def _instruction(style: Style) -> str:
    if style.structured:
        return 'Answer with JSON: {"winner": "A" | "B" | "tie", "rationale": "<one sentence>"}.'
    tail = ", then one short sentence explaining it." if style.rationale else ", and nothing else."
    return (
        "Reply with A if Response A better follows the principle, B if Response B does, "
        f"or C if they are equally good{tail}"
    )


def render(
    principle: Principle, case: Case, first: Candidate, second: Candidate, style: Style
) -> list[Message]:
    """The judge chat for one ordered pair. Shared text (principle, conversation) comes first."""
    user = (
        f"Principle ({principle.id}): {principle.statement}\n\n"
        f"Conversation so far:\n{conversation(case.messages())}\n\n"
        f"Response A:\n{fence('response_a', first.response)}\n\n"
        f"Response B:\n{fence('response_b', second.response)}\n\n"
        f"Which response better follows the principle? {_instruction(style)}"
    )
    return [Message(role="system", content=SYSTEM), Message(role="user", content=user)]


def build_request(
    principle: Principle, case: Case, first: Candidate, second: Candidate, style: Style, seed: int
) -> BackendRequest:
    """The backend request for one ordered pairwise judgment."""
    wants_text = style.structured or style.rationale or not style.logprobs
    return BackendRequest(
        messages=render(principle, case, first, second, style),
        choices=CHOICES if style.logprobs else None,
        max_tokens=style.max_tokens if wants_text else 0,
        json_schema=output_schema() if style.structured else None,
        subject=Subject(
            principle=principle.id,
            response=first.response,
            response_b=second.response,
            prompt=case.messages(),
            scale_max=principle.scale_max,
        ),
        seed=seed,
    )


def _probs(logprobs: dict[str, float]) -> tuple[list[float] | None, float]:
    raw = [math.exp(logprobs[c]) if c in logprobs else 0.0 for c in CHOICES]
    mass = sum(raw)
    return ([p / mass for p in raw] if mass > 0 else None), mass


def _from_text(text: str, structured: bool) -> Reading:
    if structured or text.startswith("{"):
        match = JSON_OBJECT.search(text)
        data: dict[str, Any] = {}
        try:
            data = LENIENT_JSON.decode(match.group(0)) if match else {}
            _validator().validate(data)
        except (json.JSONDecodeError, jsonschema.ValidationError) as exc:
            return Reading(reason=f"judge JSON invalid: {getattr(exc, 'message', exc)}")
        letter = {"A": "A", "B": "B", "tie": "C"}[data["winner"]]
        return Reading(score=_HARD[letter], rationale=data["rationale"])
    match = re.match(r"\s*(?:response\s*)?([ABC])\b[.:)\-\s]*(.*)", text, re.S | re.I)
    if not match:
        return Reading(reason="no A, B or C found in the judge's answer")
    return Reading(score=_HARD[match.group(1).upper()], rationale=match.group(2).strip())


_HARD = {"A": 1.0, "B": 0.0, "C": 0.5}


def read_preference(resp: BackendResponse, structured: bool) -> Reading:
    """P(first shown is better) in ``score`` (ties count half), with the A/B/C distribution when
    known.
    """
    if resp.choice_logprobs:
        dist, mass = _probs(resp.choice_logprobs)
        if dist is not None and mass >= MIN_SCALE_MASS:
            rationale = re.sub(r"^\s*[ABC]\b[.:)\-\s]*", "", resp.text).strip()
            return Reading(score=dist[0] + dist[2] / 2, distribution=dist, rationale=rationale)
        if not resp.text:
            return Reading(reason=f"judge put only {mass:.1%} probability on A, B and C")
    if not resp.text.strip():
        return Reading(reason="judge returned no text")
    return _from_text(resp.text.strip(), structured)


def winner_of(p_first: float, dist: list[float] | None, tie_band: float = 0.0) -> str:
    """'first', 'second' or 'tie' for one ordered judgment."""
    if dist is not None:
        return WINNERS[CHOICES[max(range(3), key=lambda i: dist[i])]]
    if abs(p_first - 0.5) <= tie_band:
        return "tie"
    return "first" if p_first > 0.5 else "second"
