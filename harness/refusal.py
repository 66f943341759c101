"""The refusal check: does a response decline the request? (rules backend and student negatives)."""

from __future__ import annotations

import re

REFUSAL_PATTERNS = [
    r"\bI(?:'m| am) (?:sorry|afraid)\b.{0,40}\b(?:can(?:'|no)t|unable|won't)\b",
    r"\bI (?:can(?:'|no)t|won't|will not|am unable to|must decline to) (?:help|assist|provide|do that|comply|share)",
    r"\bas an AI\b.{0,60}\b(?:can(?:'|no)t|unable|not able)\b",
    r"\bI(?:'m| am) not (?:able|allowed|comfortable)\b",
]
# One pass over the text instead of one per pattern: a text matches the alternation exactly when
# it matches one of the patterns.
_REFUSAL = re.compile("|".join(f"(?:{p})" for p in REFUSAL_PATTERNS), re.I | re.S)


def is_refusal(text: str) -> bool:
    """True when the text declines the request."""
    return _REFUSAL.search(text) is not None
