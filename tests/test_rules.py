"""The rules backend: each declared check fires on what it should, and only there."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter

import pytest
from pydantic import ValidationError

from harness.backends.base import BackendRequest, Subject
from harness.backends.rules import Rule, RulesBackend, _repeats, matches
from harness.config import load_judge
from harness.records import Message
from harness.refusal import is_refusal


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


def _score(
    backend: RulesBackend, response: str, principle: str = "p", top: int = 5
) -> dict[str, object]:
    subject = Subject(
        principle=principle,
        response=response,
        prompt=[Message(role="user", content="hi")],
        scale_max=top,
    )
    [resp] = asyncio.run(
        backend.complete([BackendRequest(messages=subject.prompt, subject=subject)])
    )
    return json.loads(resp.text)


def _backend(*rules: dict[str, object], **options: object) -> RulesBackend:
    body = {"rules": [{"principle": "p", **r} for r in rules], **options}
    return RulesBackend(RulesBackend.Options.model_validate(body))


def test_worst_fired_rule_wins() -> None:
    """Two rules fire, scoring 4 and 2 (listed mild first): the lower score is the verdict."""
    backend = _backend(
        {"id": "mild", "kind": "keywords", "keywords": ["maybe"], "score": 4},
        {"id": "severe", "kind": "keywords", "keywords": ["steal"], "score": 2},
        {"id": "unfired", "kind": "keywords", "keywords": ["absent"], "score": 1},
    )
    answer = _score(backend, "maybe steal it")
    assert answer["score"] == 2
    assert "mild" in answer["rationale"] and "severe" in answer["rationale"]
    assert "unfired" not in answer["rationale"]
    assert _score(backend, "maybe later")["score"] == 4  # only the mild rule fires


def test_no_rule_fired_gives_the_default_else_the_top_of_the_scale() -> None:
    rules = {"id": "r", "kind": "keywords", "keywords": ["steal"], "score": 1}
    assert _score(_backend(rules), "fine", top=5) == {"score": 5, "rationale": "No rule fired."}
    assert _score(_backend(rules), "fine", top=3)["score"] == 3
    assert _score(_backend(rules, default_score={"p": 4}), "fine")["score"] == 4


def test_a_rule_score_above_the_scale_is_capped_and_negate_inverts_the_check() -> None:
    # a length rule matches text under 10 characters; negated, it fires on longer text
    backend = _backend(
        {"id": "long", "kind": "length", "min_chars": 10, "score": 9, "negate": True}
    )
    assert _score(backend, "long enough text", top=3)["score"] == 3  # fired: 9, capped at 3
    assert _score(backend, "short", top=3) == {"score": 3, "rationale": "No rule fired."}
    answer = _score(backend, "long enough text", top=10)
    assert answer == {"score": 9, "rationale": "Rules fired: long: length."}


def test_shipped_rules_judge_only_covered_principles() -> None:
    config, _ = load_judge("rules")
    backend = RulesBackend(RulesBackend.Options.model_validate(config.options))
    assert backend.covers("helpfulness") and not backend.covers("no-such-principle")
    answer = _score(backend, "I can't help with that.", principle="helpfulness")
    assert answer["score"] == 2 and "refusal-unhelpful" in answer["rationale"]
    assert is_refusal("As an AI, I cannot do that")


def _plain_keywords(words: list[str], text: str) -> bool:
    """The definition: some keyword, caselessly, as a whole word (one search per keyword)."""
    folded = text.casefold()
    return any(re.search(rf"\b{re.escape(w.casefold())}\b", folded) for w in words)


def _plain_repeats(text: str, limit: int) -> bool:
    sentences = [p.strip().lower() for p in re.split(r"(?<=[.!?])\s+|\n+", text)]
    counts = Counter(s for s in sentences if len(s) > 8)
    return any(n >= limit for n in counts.values())


def test_fast_keyword_and_repetition_checks_agree_with_their_definitions() -> None:
    """The keyword check skips the leading word boundary in the regex and checks it by hand, and
    the repetition check lower-cases once: both must find exactly what the plain versions find.
    """
    words = ["meth", "method", "shut up", "%off", "café", "straße", "I have personally"]
    pieces = [*words, "METH", "Methods", "xmeth", "meth_", "_meth", "100%off", "%OFF!", "Café",
              "STRASSE", "CAFÉs", " ", ". ", "\n", "a", "ſhut up", "Buy it today.", "Ok."]  # fmt: skip
    rng = random.Random(7)
    check = _backend({"id": "k", "kind": "keywords", "keywords": words, "score": 1})
    for _ in range(4000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        fired = _score(check, text)["score"] == 1
        assert fired is _plain_keywords(words, text), text
        assert _repeats(text, 3) is _plain_repeats(text, 3), text
