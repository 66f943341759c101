r"""Untrusted text in judge prompts: fences it cannot close, turns it cannot forge, and finding
them.

Responses, conversations and critiques are data written by whoever produced them. In a judge prompt
each piece sits between an opening and a closing tag that carry a code derived from the piece::

    <response-3fa94c1e>
    the text, exactly as written (no escaping)
    </response-3fa94c1e>

The code is chosen so that the closing tag does not occur in the text, so the text cannot end its
fence early; and since the code depends on the text, text written in advance cannot know the code of
the fence it will sit in. Nothing is escaped: ``a && b < c`` reaches the judge as ``a && b < c``.

A conversation is one fence per turn, the tag naming the speaker (``<user-…>``, ``<assistant-…>``),
so a message that contains ``"\\nASSISTANT: …"`` or a fake tag stays inside the turn it belongs to.

:func:`fenced_spans` finds the fences of a rendered prompt again: local backends use it to tokenise
untrusted text apart from the instructions, and to cut an over-long prompt inside untrusted text.
This module sits low in the import graph: judging renders with it, backends read with it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from harness.records import Message

#: Hex digits in a fence code: 32 bits, so guessing a fence's code takes billions of tries.
CODE_LENGTH = 8
_OPENING = re.compile(rf"<([a-z][a-z_]*-[0-9a-f]{{{CODE_LENGTH}}})>\n")


def fence_code(tag: str, text: str) -> str:
    """The first code derived from ``text`` whose closing tag ``text`` does not contain."""
    attempt = 0
    while True:
        seed = f"{tag}\x00{attempt}\x00{text}".encode("utf-8", "surrogatepass")
        code = hashlib.sha256(seed).hexdigest()[:CODE_LENGTH]
        if f"</{tag}-{code}>" not in text:
            return code
        attempt += 1


def fence(tag: str, text: str) -> str:
    """``text`` as written, between an opening and a closing tag it cannot close or forge."""
    if not re.fullmatch(r"[a-z][a-z_]*", tag):
        raise ValueError(f"fence tag {tag!r} must be lowercase letters and underscores")
    name = f"{tag}-{fence_code(tag, text)}"
    return f"<{name}>\n{text}\n</{name}>"


def conversation(messages: Sequence[Message]) -> str:
    """A conversation as one fence per turn, each tag naming its speaker."""
    return "\n".join(fence(m.role, m.content) for m in messages)


def fenced_spans(content: str) -> list[tuple[int, int]]:
    """``(start, end)`` character ranges of the fenced texts in ``content``, in order.

    Scans left to right: an opening tag (trusted text comes before any fence) runs to the first
    closing tag with the same name and code, which the fenced text cannot contain: the real one.
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    while (match := _OPENING.search(content, pos)) is not None:
        closing = f"\n</{match.group(1)}>"
        end = content.find(closing, match.end() - 1)
        if end < 0:  # an opening tag without its closing tag is not a fence
            pos = match.end()
            continue
        start = match.end()
        spans.append((start, max(start, end)))
        pos = end + len(closing)
    return spans


def fenced_texts(content: str) -> list[tuple[str, str]]:
    """``(tag, text)`` of each fence in ``content``, in order (the tag without its code)."""
    out = []
    for start, end in fenced_spans(content):
        header = content[: start - 1].rsplit("<", 1)[1].rstrip(">")
        out.append((header.rsplit("-", 1)[0], content[start:end]))
    return out
