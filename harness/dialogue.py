"""How a long dialogue is cut to fit a local judge: keep the turns nearest the reply.

:func:`fit_dialogue` is the one place that decides which turns of a conversation a length-limited
judge sees. It keeps the latest turns whose combined size fits the budget, drops older ones whole,
and never drops the last turn (the one the reply answers): when that turn alone is over the budget,
its *end* is kept. The reply under judgment is not part of the dialogue and is never cut here.

Sizes are measured by a caller-supplied ``count`` (tokens of the judge's tokenizer; characters by
default), so the function knows nothing about models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from harness.records import Message

Count = Callable[[str], int]


def fit_dialogue(
    messages: Sequence[Message], budget: int, count: Count = len, *, cover: bool = False
) -> list[Message]:
    """The latest turns of ``messages`` that fit ``budget`` (by ``count`` of their contents).

    Older turns are dropped whole. The last turn is always kept; if it alone exceeds the budget, the
    end of its text is kept (cut at a character, so roughly ``budget`` in ``count`` units).
    With ``cover``, the turn that crosses the budget is kept too (so the kept turns cover at least
    ``budget``: a caller that then keeps the last ``budget`` tokens of the rendered text sees
    exactly what it would have seen from the whole dialogue).
    """
    if not messages:
        return []
    kept = list(messages[first_kept([count(m.content) for m in messages], budget, cover=cover) :])
    if len(kept) == 1 and count(kept[0].content) > budget and not cover:
        kept = [Message(role=kept[0].role, content=_tail(kept[0].content, budget, count))]
    return kept


def first_kept(sizes: Sequence[int], budget: int, *, cover: bool = False) -> int:
    """Index of the oldest turn kept when the latest turns of these sizes must fit ``budget``.

    The last turn is always kept; with ``cover``, so is the turn that crosses the budget.
    """
    used, start = 0, len(sizes)
    while start > 0:
        size = sizes[start - 1]
        if start < len(sizes) and used + size > budget:
            return start - 1 if cover and used < budget else start
        used += size
        start -= 1
    return start


def _tail(text: str, budget: int, count: Count) -> str:
    """The longest end of ``text`` whose ``count`` is within ``budget`` (a binary search)."""
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi) // 2
        if count(text[mid:]) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return text[lo:]
