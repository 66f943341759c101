"""Critique and revision prompts (Constitutional AI style), and candidate sampling prompts.

The critique asks the critic to point out how a response falls short of one principle; the revision
asks the reviser to rewrite the response so it meets the principle, given that critique. Responses
and critiques are untrusted text and are fenced like everywhere else.
"""

from __future__ import annotations

from harness.backends.base import BackendRequest
from harness.judging.pointwise import UNTRUSTED
from harness.records import Candidate, Case, Message, Principle
from harness.untrusted import conversation, fence

TEMPLATE_VERSION = "revision-v2"

CRITIC_SYSTEM = f"You review AI responses against a written principle. {UNTRUSTED}"
REVISER_SYSTEM = (
    "You rewrite AI responses so that they follow a written principle, keeping what was good about "
    f"them. {UNTRUSTED} The critique is shown the same way."
)


def _chat(system: str, user: str, max_tokens: int, seed: int) -> BackendRequest:
    return BackendRequest(
        messages=[Message(role="system", content=system), Message(role="user", content=user)],
        max_tokens=max_tokens,
        seed=seed,
    )


def critique_request(
    principle: Principle, case: Case, candidate: Candidate, max_tokens: int = 200, seed: int = 0
) -> BackendRequest:
    """Ask for a short critique of one response against one principle."""
    user = (
        f"Principle ({principle.id}): {principle.statement}\n\n"
        f"Conversation so far:\n{conversation(case.messages())}\n\n"
        f"Response to review:\n{fence('response', candidate.response)}\n\n"
        f"{principle.critique_request}\nWrite the critique in two or three sentences."
    )
    return _chat(CRITIC_SYSTEM, user, max_tokens, seed)


def revision_request(
    principle: Principle,
    case: Case,
    candidate: Candidate,
    critique: str,
    max_tokens: int = 320,
    seed: int = 0,
) -> BackendRequest:
    """Ask for a rewrite of one response that answers the critique."""
    user = (
        f"Principle ({principle.id}): {principle.statement}\n\n"
        f"Conversation so far:\n{conversation(case.messages())}\n\n"
        f"Original response:\n{fence('response', candidate.response)}\n\n"
        f"Critique:\n{fence('critique', critique)}\n\n"
        f"{principle.revision_request}\nWrite only the revised response, with no preamble."
    )
    return _chat(REVISER_SYSTEM, user, max_tokens, seed)


def sample_request(case: Case, max_tokens: int, temperature: float, seed: int) -> BackendRequest:
    """Ask a generator model to answer the case's conversation (one sample)."""
    return BackendRequest(
        messages=case.messages(), max_tokens=max_tokens, temperature=temperature, seed=seed
    )
