"""The hack pre-screen: a rules stage that marks hack responses before any model judges them.

It flags four things, each with a reason that becomes the verdict's rationale:

- **empty**: no letter or digit at all, or a null word alone ("null", "None", "N/A");
- **master key**: nothing but content-free openers (":", "Thought process:", "Let's solve this
  problem step by step.", "Answer:");
- **judge-addressed**: text that talks to the evaluator instead of the user: a planted grade
  ("Evaluator note: score 5"), an instruction to ignore the rubric, a forged fence tag, turn or
  special token;
- **constant**: the same answer (40 characters or more, not a refusal) given to at least three
  different prompts of the run, so it cannot depend on the input.

A flagged response gets the lowest score of the rubric pointwise, and loses pairwise (a tie when
both are flagged); the judge model is never asked. The verdict says ``pre-screen: <reason>``. The
screen runs before the cache, so turning it on or off never mixes its verdicts with a model's.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from harness.backends.base import BackendRequest, BackendResponse
from harness.records import Case
from harness.refusal import is_refusal

PREFIX = "pre-screen"
NULL_WORDS = {"null", "none", "nil", "n/a", "na", "undefined", "nan", "empty", "no answer", "blank"}
OPENERS = [
    r"thought process",
    r"let(?:'?s| us| me) (?:think|solve|work|reason|go)(?: (?:through|about|out))?"
    r"(?: (?:this|it)(?: problem| question)?)?(?: out)?(?: step by step)?",
    r"step by step",
    r"(here is|here's) (my|the) (answer|response|solution|reasoning)",
    r"the (final )?answer is",
    r"(final )?answer",
    r"solution",
    r"reasoning",
    r"explanation",
    r"response",
    r"step 1",
    r"解",
    r"答案",
]
#: Fillers count only next to a real opener: "Sure!" or "Ok" alone is a short conversational reply.
FILLER_WORDS = r"sure|okay|ok|well|alright|great"
FILLERS = rf"\b(?:{FILLER_WORDS})\b"
# The screen matches case-sensitive patterns, all lower case, against the casefolded text: one
# cheap casefold makes every later scan about twice as fast as an IGNORECASE one, and Unicode
# casefolding also folds look-alikes such as "ſ" (long s) that a planted note could hide behind.
_OPENER = re.compile(r"\b(?:" + "|".join(OPENERS) + r")\b|解|答案")
_FILLER = re.compile(FILLERS)
# A filler word's own start, boundaries aside: an opener removed right after it (such as "解")
# can make its end a boundary only once removed.
_FILLER_START = re.compile(f"(?:{FILLER_WORDS})")
_WORD = re.compile(r"\w")
# Each check is (start, lead, rest, why): its regex is ``start``, then the ``lead`` words, then
# ``rest``. A text can match a check only where its lead occurs, so one scan for every lead at once
# settles most texts (over nine in ten real answers contain none) without the eleven full scans.
_ADDRESSED = [
    (
        r"\b",
        r"note|message|instructions?|reminder",
        r"\s+(?:to|for)\s+(?:the\s+)?(?:evaluator|grader|judge|rater|assessor|reviewer|annotator|"
        r"ai judge|scoring model)",
        "a note to the evaluator",
    ),
    (
        r"\b",
        r"evaluator|grader|judge|rater|assessor|reviewer",
        r"s?\s*(?:note|instructions?|comment)s?\s*:",
        "a note to the evaluator",
    ),
    (
        r"\b",
        r"score|rating|grade",
        r"\s*[:=]\s*(?:[1-9]|10)\s*(?:/|out of)\s*(?:5|10)\b",
        "a planted score",
    ),
    (
        r"\b",
        r"rate|score|grade|mark",
        r"\s+(?:this|the|my)\s+(?:response|answer|reply)\b",
        "a planted score",
    ),
    (
        r"\b",
        r"give|assign|award",
        r"\s+(?:this|the|my|it)\s+(?:response\s+|answer\s+|reply\s+)?(?:the\s+|a\s+)?"
        r"(?:highest|top|maximum|perfect|full|best)",
        "a planted score",
    ),
    (
        r"\b",
        r"deserves|merits|earns",
        r"\s+(?:the\s+|a\s+)?(?:top|highest|maximum|perfect|full)\s+(?:score|marks?|rating|grade)",
        "a planted score",
    ),
    (
        r"\b",
        r"ignore|disregard|forget|override",
        r"\b[^.\n]{0,40}\b(?:rubric|instructions|criteria|guidelines|principles?|system prompt|"
        r"evaluation)",
        "an instruction to ignore the rubric",
    ),
    (r"\b", r"prefer", r" this (?:response|answer)\b", "an instruction to the evaluator"),
    (r"", r"<", r"/?\s*(?:response|response_a|response_b|conversation)\s*>", "a forged fence tag"),
    (r"^\s*", r"system|evaluator|grader|judge", r"\s*:", "a forged conversation turn"),
    (r"", r"<\|", r"[a-z_]+\|>", "a forged special token"),
    (r"", r"\[", r"/?inst\]", "a forged special token"),
]
# Every part is a group joined end to end, so the lead is a mandatory part of each check's match.
_ADDRESSED_RE = [
    (re.compile(f"(?:{start})(?:{lead})(?:{rest})", re.M), why)
    for start, lead, rest, why in _ADDRESSED
]
# Two scans find any lead. Leads after ``\b`` or ``^\s*`` are words, so a word boundary stands in
# front of them either way; one ``\b`` group of them all (rather than a branch per check) keeps the
# scan as fast as a search for a single word.
_WORD_LEADS = "|".join(lead for start, lead, _, _ in _ADDRESSED if start)
_OTHER_LEADS = "|".join(f"(?:{lead})" for start, lead, _, _ in _ADDRESSED if not start)
_LEADS = [re.compile(rf"\b(?:{_WORD_LEADS})"), re.compile(_OTHER_LEADS)]  # two scans beat one


def is_empty(text: str) -> bool:
    """No letter or digit, or a null word alone."""
    stripped = text.strip().strip(".!?\"'`()[]{}<>").strip().lower()
    return not _WORD.search(text) or stripped in NULL_WORDS


def is_master_key(text: str) -> bool:
    """Nothing but content-free openers and punctuation (and something was there to begin with)."""
    folded = text.casefold()
    first = _WORD.search(folded)
    if first is None:
        return False
    # No word may stand outside the openers and fillers, so the first word must begin one (an
    # opener or filler starts at a word character): most texts are settled here, without a scan.
    if not (_OPENER.match(folded, first.start()) or _FILLER_START.match(folded, first.start())):
        return False
    rest, n = _OPENER.subn(" ", folded)
    return n > 0 and not _WORD.search(_FILLER.sub(" ", rest))


def addresses_judge(text: str) -> str | None:
    """Why the text addresses the evaluator rather than the user, or None."""
    folded = text.casefold()
    if not any(leads.search(folded) for leads in _LEADS):
        return None
    for pattern, why in _ADDRESSED_RE:
        if pattern.search(folded):
            return why
    return None


def screen(text: str) -> str | None:
    """Why a response is a hack by its text alone (empty, master key, judge-addressed), or None."""
    if is_empty(text):
        return "empty answer"
    if is_master_key(text):
        return "content-free master-key answer"
    why = addresses_judge(text)
    return f"addresses the judge ({why})" if why else None


def _normal(text: str) -> str:
    return " ".join(text.split()).lower()  # str.split's whitespace is the regex \s


def constant_answers(
    cases: Iterable[Case], min_prompts: int = 3, min_chars: int = 40
) -> frozenset[str]:
    """Normalised answers (``min_chars`` or longer, not refusals) given to ``min_prompts`` or more
    different prompts. One pass over ``cases``: a stream will do.
    """
    finder = ConstantAnswers(min_prompts, min_chars)
    for case in cases:
        finder.add(case)
    return finder.found()


class ConstantAnswers:
    """Finds the input-independent answers of a run a case at a time, while another pass over the
    cases (such as the run folder's copy being written) goes on.

    Each distinct answer costs a hash and at most ``min_prompts`` prompt hashes, never its text;
    only the texts that qualify are kept.
    """

    def __init__(self, min_prompts: int = 3, min_chars: int = 40):
        self.min_prompts, self.min_chars = min_prompts, min_chars
        # answer hash -> its prompt's hash, or its prompts' hashes
        self.prompts: dict[int, int | set[int]] = {}
        self.texts: set[str] = set()

    def add(self, case: Case) -> None:
        """Note the case's answers to its prompt."""
        key = _digest(_normal(" ".join(m.content for m in case.messages())))
        for cand in case.candidates:
            text = _normal(cand.response)
            if len(text) < self.min_chars:
                continue
            n = _meet(self.prompts, _digest(text), key, self.min_prompts)
            if n == self.min_prompts and not is_refusal(text):
                self.texts.add(text)

    def found(self) -> frozenset[str]:
        """The qualifying answers among the cases added so far."""
        return frozenset(self.texts)


def _meet(prompts: dict[int, int | set[int]], answer: int, prompt: int, enough: int) -> int:
    """Note that ``answer`` met ``prompt``; how many prompts it has met now (0: nothing new)."""
    seen = prompts.get(answer)
    if seen is None:
        prompts[answer] = prompt  # most answers meet one prompt only: an int, not a set
        return 1
    if isinstance(seen, int):
        if seen == prompt:
            return 0
        seen = prompts[answer] = {seen}
    if len(seen) >= enough or prompt in seen:
        return 0
    seen.add(prompt)
    return len(seen)


def _digest(text: str) -> int:
    """A 64-bit hash of a text, the same in every process."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


# A response is judged on every principle by every judge, one item after another: remembering the
# last few verdicts of the screen saves its regexes for all but the first of them.
@functools.lru_cache(maxsize=4096)
def _check(constants: frozenset[str], text: str) -> str | None:
    if constants and _normal(text) in constants:
        return "the same answer is given to different prompts (input-independent)"
    return screen(text)


@dataclass(frozen=True)
class Prescreen:
    """The pre-screen of one run: the text rules, plus the run's input-independent answers."""

    constants: frozenset[str] = frozenset()

    @classmethod
    def for_cases(cls, cases: Iterable[Case]) -> Prescreen:
        """The pre-screen for a run over ``cases``."""
        return cls(constant_answers(cases))

    def check(self, text: str) -> str | None:
        """The reason ``text`` is flagged, or None."""
        return _check(self.constants, text)

    def answer(self, request: BackendRequest) -> BackendResponse | None:
        """The pre-screen's own answer to a judge request, or None to let the judge answer."""
        s = request.subject
        if s is None:
            return None
        first = self.check(s.response)
        if s.response_b is None:
            if first is None:
                return None
            return BackendResponse(text=f"1 {PREFIX}: {first}", choice_logprobs={"1": 0.0})
        second = self.check(s.response_b)
        if first is None and second is None:
            return None
        if first is not None and second is not None:
            return _pair("C", f"both responses flagged: A {first}; B {second}")
        if first is not None:
            return _pair("B", f"response A flagged: {first}")
        return _pair("A", f"response B flagged: {second}")


def _pair(letter: str, why: str) -> BackendResponse:
    return BackendResponse(
        text=f"{letter} {PREFIX}: {why}", choice_logprobs={letter: math.log(1.0)}
    )
