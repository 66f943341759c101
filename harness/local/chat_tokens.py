"""Token ids of a chat for a local model, safe against untrusted text.

Special tokens appear only where the template puts them, and an over-long prompt is cut inside its
untrusted text, never in the instructions.

Special tokens. Tokenising the rendered chat as one string turns ``<|im_end|>`` written inside a
response into the real end-of-turn token: the response could close its own turn and start a forged
one. Here the chat template is rendered with a placeholder for each message, the template's own text
is tokenised with special tokens (it holds the real markers), and each message's content is
tokenised on its own with special tokens split into plain text. For text without special-token
strings the ids are the same as before (a message's content starts and ends at a token boundary of
the template).

Over-long prompts. Keeping the end of a prompt too long for the model drops the system prompt and
the rubric. Instead, the oldest turns of the conversation are emptied first, keeping the turns
nearest the reply (:func:`harness.dialogue.first_kept`; the last turn and the response are never
emptied); then the fenced (untrusted) parts of the contents (see :mod:`harness.untrusted`) give up
tokens, the longest first, each keeping its start and end around a marker that says how much was
cut; the instructions and every fence tag stay whole. Only when the instructions alone do not fit is
the start cut, as the last resort. Either way the prompt is reported as truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.dialogue import first_kept
from harness.errors import JudgeError
from harness.untrusted import fenced_spans

#: Stands in for a message's content while the template is rendered (private-use characters that
#: no template adds or changes).
_SLOT = "\ue000{}\ue001"
MARKER = "\n[... {} tokens cut ...]\n"
TURN_TAGS = ("system", "user", "assistant")


@dataclass
class Piece:
    """Consecutive token ids, and whether they are untrusted text that may be cut."""

    ids: list[int]
    untrusted: bool = False
    turn: bool = False  # a fenced turn of the conversation under judgment (not the response)


def text_ids(tokenizer: Any, text: str) -> list[int]:
    """Ids of ``text`` as plain text: a special token's string becomes ordinary tokens."""
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def template_parts(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[str]:
    """The rendered template around the messages: ``len(messages) + 1`` strings."""
    slots = [_SLOT.format(i) for i in range(len(messages))]
    chat = [{"role": m["role"], "content": s} for m, s in zip(messages, slots, strict=True)]
    text = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    parts = []
    for slot in slots:
        if text.count(slot) != 1:
            raise JudgeError("the model's chat template changes or repeats message contents")
        head, text = text.split(slot)
        parts.append(head)
    return [*parts, text]


def content_pieces(tokenizer: Any, content: str) -> list[Piece]:
    """One message's content as plain-text tokens, its fenced texts marked untrusted."""
    encoded = tokenizer(
        content, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True
    )
    ids, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
    pieces: list[Piece] = []
    k = 0
    for start, end in fenced_spans(content):
        first = k
        while k < len(ids) and offsets[k][1] <= start:
            k += 1
        pieces.append(Piece(ids[first:k]))
        inside = k
        while k < len(ids) and offsets[k][1] <= end:  # a token wholly before the fence's end
            k += 1
        tag = content[: start - 1].rsplit("<", 1)[-1].rsplit("-", 1)[0]
        pieces.append(Piece(ids[inside:k], untrusted=True, turn=tag in TURN_TAGS))
    pieces.append(Piece(ids[k:]))
    return [p for p in pieces if p.ids]


def chat_pieces(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[Piece]:
    """The chat with the generation prompt as pieces: template (special tokens) and contents."""
    parts = template_parts(tokenizer, messages)
    pieces = [Piece(list(tokenizer(parts[0], add_special_tokens=False)["input_ids"]))]
    for message, part in zip(messages, parts[1:], strict=True):
        pieces += content_pieces(tokenizer, message["content"])
        pieces.append(Piece(list(tokenizer(part, add_special_tokens=False)["input_ids"])))
    return [p for p in pieces if p.ids]


def fit(tokenizer: Any, pieces: list[Piece], limit: int) -> tuple[list[int], bool]:
    """The ids of ``pieces`` in at most ``limit`` tokens, and whether anything was cut."""
    total = sum(len(p.ids) for p in pieces)
    if total <= limit:
        return [t for p in pieces for t in p.ids], False
    pieces, total = _drop_old_turns(tokenizer, pieces, limit, total)
    if total <= limit:
        return [t for p in pieces for t in p.ids], True
    sizes = [len(p.ids) for p in pieces if p.untrusted]
    room = limit - (total - sum(sizes))
    cap = _cap(sizes, room, _marker_room(tokenizer, total))
    if cap is None:  # the instructions alone are too long: the last resort keeps the end
        return [t for p in pieces for t in p.ids][-limit:], True
    ids: list[int] = []
    for p in pieces:
        ids += _cut(tokenizer, p.ids, cap) if p.untrusted and len(p.ids) > cap else p.ids
    if len(ids) > limit:  # a marker came out longer than measured: keep the instructions whole
        return ids[-limit:], True
    return ids, True


def _drop_old_turns(
    tokenizer: Any, pieces: list[Piece], limit: int, total: int
) -> tuple[list[Piece], int]:
    """Empty the oldest conversation turns until the rest fits, keeping those nearest the reply.

    Their fences stay, and the newest emptied one says how much was cut; :func:`first_kept` decides.
    The last turn and the response are never emptied here; ``fit`` cuts what still overflows.
    """
    turns = [i for i, p in enumerate(pieces) if p.turn]
    if len(turns) < 2:
        return pieces, total
    sizes = [len(pieces[i].ids) for i in turns]
    room = limit - (total - sum(sizes)) - _marker_room(tokenizer, total)
    start = first_kept(sizes, max(room, 0))
    if start == 0:
        return pieces, total
    out = list(pieces)
    cut = sum(sizes[:start])
    for k, i in enumerate(turns[:start]):
        marker = text_ids(tokenizer, MARKER.format(cut)) if k == start - 1 else []
        out[i] = Piece(marker, untrusted=True, turn=True)
    return out, sum(len(p.ids) for p in out)


def _marker_room(tokenizer: Any, total: int) -> int:
    return len(text_ids(tokenizer, MARKER.format(total))) + 2


def _cap(sizes: list[int], room: int, smallest: int) -> int | None:
    """The largest per-text size (at least ``smallest``) so that the texts fit in ``room``."""

    def used(cap: int) -> int:
        return sum(min(s, cap) for s in sizes)

    if not sizes or used(smallest) > room:
        return None
    low, high = smallest, max(sizes)
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if used(mid) <= room else (low, mid - 1)
    return low


def _cut(tokenizer: Any, ids: list[int], cap: int) -> list[int]:
    """``ids`` in ``cap`` tokens: its start and end around a marker saying how many were cut."""
    longest = text_ids(tokenizer, MARKER.format(len(ids)))  # the count has at most these digits
    keep = max(0, cap - len(longest))
    marker = text_ids(tokenizer, MARKER.format(len(ids) - keep))
    head = (keep + 1) // 2
    tail = keep - head
    return ids[:head] + marker + (ids[len(ids) - tail :] if tail else [])
