"""How long dialogues are cut for local judges: the turns nearest the reply stay, the reply too."""

from __future__ import annotations

import pytest

from harness.dialogue import fit_dialogue
from harness.records import Message


def _dialogue(n: int, words: int = 30) -> list[Message]:
    """n turns ending with a user turn; turn k says 'tk' ``words`` times (every turn traceable)."""
    roles = ["user" if (n - k) % 2 else "assistant" for k in range(n)]
    return [
        Message(role=r, content=" ".join([f"t{k}"] * words))  # type: ignore[arg-type]
        for k, r in enumerate(roles)
    ]


def test_keeps_the_latest_turns_whole_and_drops_older_ones() -> None:
    turns = _dialogue(8)  # each turn 30 * 3 - 1 = 89 or 30 * 3 - 1 characters
    kept = fit_dialogue(turns, budget=200)
    assert kept == turns[-2:] and kept[-1].role == "user"
    assert fit_dialogue(turns, budget=10_000) == turns


def test_the_last_turn_is_never_dropped_and_keeps_its_end() -> None:
    turns = [Message(role="user", content="start " + "x" * 500 + " the question?")]
    kept = fit_dialogue(turns, budget=40)
    assert len(kept) == 1 and kept[0].content.endswith("the question?")
    assert len(kept[0].content) == 40 and "start" not in kept[0].content


def test_cover_keeps_the_turn_that_crosses_the_budget() -> None:
    turns = _dialogue(6)
    kept = fit_dialogue(turns, budget=120, cover=True)
    assert kept == turns[-2:] and sum(len(m.content) for m in kept) >= 120


def test_token_counts_are_the_callers() -> None:
    turns = _dialogue(6, words=10)
    words = fit_dialogue(turns, budget=25, count=lambda t: len(t.split()))
    assert words == turns[-2:]


def test_prompted_judge_input_drops_the_oldest_turns_first() -> None:
    """The prompted judge's input (real tokenizer, no model): a dialogue longer than the limit loses
    its oldest turns whole, keeps the turns nearest the reply, the reply and the instructions."""
    from transformers import AutoTokenizer

    from harness.config import load_constitution
    from harness.judging.pointwise import Style, build_request
    from harness.local.chat_tokens import chat_pieces, fit
    from harness.local.model_cache import embedded_source
    from harness.records import Candidate, Case

    source = embedded_source("smollm2")
    tok = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
    principle = load_constitution("default")[0].principle("coherence")
    case = Case(id="long", prompt=_dialogue(8, words=60))
    reply = Candidate(generator="g", response="i think the second one was better .")
    req = build_request(principle, case, reply, Style(True, False, False), seed=0)
    pieces = chat_pieces(tok, [m.model_dump() for m in req.messages])
    assert sum(len(p.ids) for p in pieces) > 1300
    ids, cut = fit(tok, pieces, 1000)
    shown = tok.decode(ids)
    assert cut and len(ids) <= 1000
    assert shown.count("t7") == 60 and shown.count("t6") == 60  # the latest turns, whole
    assert "t0" not in shown and shown.count("tokens cut ...]") == 1
    assert "i think the second one was better ." in shown and "Rubric:" in shown


# --------------------------------------------------------------------------- with the real model


@pytest.fixture(scope="module")
def extractor():  # type: ignore[no-untyped-def]
    from harness.student.features import FeatureExtractor, FeatureSpec

    spec = FeatureSpec(prompt_tokens=64, response_tokens=16, layers=(30,))
    return FeatureExtractor.load(spec, device="cpu", threads=1, disk_cache=False)


@pytest.mark.slow
def test_student_sees_the_nearest_turns_and_the_whole_reply(extractor) -> None:  # type: ignore[no-untyped-def]
    """A dialogue of about 2,000 tokens against a 64-token window: what the student encodes is
    exactly the last 64 tokens of the whole rendered dialogue (so shipped heads see what they were
    trained on), it ends with the last user turn, the first turns are gone, the reply is intact."""
    turns = _dialogue(40, words=25)
    reply = "i think the second one was better ."
    enc = extractor.encode(turns, reply)
    tok = extractor.local.tokenizer
    chat = [{"role": m.role, "content": m.content} for m in turns]
    full = tok(
        tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False),
        add_special_tokens=False,
    )["input_ids"]
    assert len(full) > 1000 and list(enc.prompt) == list(full[-64:])
    seen = tok.decode(list(enc.prompt))
    assert "t39" in seen and "t0 " not in seen and "t30" not in seen
    body = list(tok(reply, add_special_tokens=False)["input_ids"])
    assert list(enc.response) == [*body, extractor.end_id]


@pytest.mark.slow
@pytest.mark.parametrize(("turns", "words", "limit"), [(40, 25, 256), (6, 200, 800)])
def test_prompted_judge_keeps_the_last_turn_and_the_whole_reply(
    turns: int, words: int, limit: int
) -> None:
    """A dialogue longer than the prompted SmolLM2's ``max_length``: many short turns (the
    prompt's tags alone overflow, so its end is kept) or a few long ones (each fenced turn is
    shortened around a marker, the instructions stay). Either way the last turn and the whole
    reply reach the judge."""
    from harness.backends.transformers import TransformersOptions, load_local_model
    from harness.config import load_constitution
    from harness.judging.pointwise import Style, build_request
    from harness.records import Candidate, Case

    local = load_local_model(TransformersOptions(device="cpu", max_length=limit, threads=1))
    principle = load_constitution("default")[0].principle("coherence")
    case = Case(id="long", prompt=_dialogue(turns, words=words))
    reply = Candidate(generator="g", response="i think the second one was better .")
    request = build_request(principle, case, reply, Style(True, False, False), seed=0)
    ids = local.prompt_ids(request)
    text = local.tokenizer.decode(ids)
    assert len(ids) <= limit and f"t{turns - 1}" in text
    assert "i think the second one was better ." in text
