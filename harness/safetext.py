"""Untrusted text made safe to show: on a terminal, in the HTML report, in Markdown.

Model outputs, generator names, case ids and file contents are untrusted. On a terminal an escape
code in them could retitle or clear the screen; anywhere, a bidi override could make text read
differently from what it is. These helpers turn such characters into visible escapes; they never
drop text.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import Iterator
from typing import TextIO

# C0 controls except tab and newline, DEL, C1 controls; bidi embeddings, overrides and isolates,
# the directional marks, and the line / paragraph separators (they break lines a reader cannot see).
_BIDI_ETC = "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI_ETC}]")
_UNSAFE_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI_ETC}]")  # tabs and newlines too
_UNSAFE_STREAM = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_BIDI_ETC}]")  # \r passes
SURROGATE = re.compile("[\ud800-\udfff]")


def _code(match: re.Match[str]) -> str:
    c = ord(match.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def for_terminal(text: str) -> str:
    r"""``text`` with control characters, escape codes and bidi controls shown as ``\x1b`` escapes.

    Tabs and newlines are kept; a lone surrogate (no terminal encoding can print it) is escaped.
    """
    return SURROGATE.sub(_code, _UNSAFE.sub(_code, text))


def for_page(text: str) -> str:
    """``text`` with control and bidi characters shown as visible ``⟨U+202E⟩`` marks (for HTML).

    Tabs, newlines and carriage returns are kept.
    """
    return SURROGATE.sub(_mark, _UNSAFE_STREAM.sub(_mark, text))


def _mark(match: re.Match[str]) -> str:
    return f"⟨U+{ord(match.group()):04X}⟩"


def bounded(text: str, limit: int, where: str) -> str:
    """At most ``limit`` characters of ``text``, with a note of what is left out and where it is."""
    if len(text) <= limit:
        return text
    rest = len(text) - limit
    return f"{text[:limit]}\n[… {rest:,} more characters not shown; the full text is in {where}]"


def md_code(text: str) -> str:
    """``text`` as one inline Markdown code span that its content cannot close or break."""
    flat = _UNSAFE_LINE.sub(_code, SURROGATE.sub(_code, text))
    runs = [len(r) for r in re.findall("`+", flat)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") or not flat.strip() else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


class TerminalStream(io.TextIOBase):
    """A text stream that escapes what :func:`for_terminal` escapes before writing to the stream it
    wraps (carriage returns pass, so that a progress line can redraw itself).
    """

    def __init__(self, inner: TextIO):
        self.inner = inner

    def write(self, text: str) -> int:
        """Write ``text`` escaped; returns its length as given."""
        self.inner.write(SURROGATE.sub(_code, _UNSAFE_STREAM.sub(_code, text)))
        return len(text)

    def flush(self) -> None:
        """Flush the wrapped stream."""
        self.inner.flush()

    def isatty(self) -> bool:
        """Whether the wrapped stream is a terminal."""
        return self.inner.isatty()

    def fileno(self) -> int:
        """The wrapped stream's file descriptor."""
        return self.inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        """The wrapped stream's encoding."""
        return getattr(self.inner, "encoding", "utf-8")


@contextlib.contextmanager
def safe_terminal() -> Iterator[None]:
    """While inside, everything written to stdout and stderr is escaped for the terminal."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = TerminalStream(sys.stdout), TerminalStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
