"""The rules backend: each declared check fires on what it should, and only there."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import ValidationError

from harness.backends.base import BackendRequest, Subject
from harness.backends.rules import Rule, RulesBackend, matches
from harness.config import load_judge
from harness.refusal import is_refusal
from harness.schema import Message


def rule(**kw: object) -> Rule:
    return Rule.model_validate({"id": "r", "principle": "p", "score": 2, **kw})


@pytest.mark.parametrize(
    ("kw", "text", "fires"),
    [
        ({"kind": "regex", "pattern": r"\bguaranteed\b"}, "This is guaranteed to work", True),
        ({"kind": "regex", "pattern": r"\bguaranteed\b"}, "No guarantees", False),
        ({"kind": "keywords", "keywords": ["steal"]}, "How to STEAL a car", True),
        ({"kind": "keywords", "keywords": ["steal"]}, "stealthy cats", False),
        ({"kind": "length", "min_chars": 5}, " hi ", True),
        ({"kind": "length", "max_chars": 5}, "hello there", True),
        ({"kind": "refusal"}, "I'm sorry, but I can't help with that.", True),
        ({"kind": "refusal"}, "Sure, here is how to boil an egg.", False),
        ({"kind": "repetition", "max_repeats": 3}, "Buy now. Buy now. Buy now. Or not.", False),
        (
            {"kind": "repetition", "max_repeats": 3},
            "Buy it today. Buy it today. Buy it today.",
            True,
        ),
    ],
)
def test_checks(kw: dict[str, object], text: str, fires: bool) -> None:
    assert matches(rule(**kw), text) is fires


def test_rule_needs_its_parameters() -> None:
    with pytest.raises(ValidationError, match="needs 'pattern'"):
        rule(kind="regex")
    with pytest.raises(ValidationError):
        rule(kind="regex", pattern="(unclosed")


def test_worst_fired_rule_wins_and_only_covered_principles_are_judged() -> None:
    config, _ = load_judge("rules")
    backend = RulesBackend(RulesBackend.Options.model_validate(config.options))
    assert backend.covers("helpfulness") and not backend.covers("no-such-principle")
    subject = Subject(
        principle="helpfulness",
        response="I can't help with that.",
        prompt=[Message(role="user", content="hi")],
    )
    [resp] = asyncio.run(
        backend.complete([BackendRequest(messages=subject.prompt, subject=subject)])
    )
    answer = json.loads(resp.text)
    assert answer["score"] == 2 and "refusal-unhelpful" in answer["rationale"]
    assert is_refusal("As an AI, I cannot do that")
