"""Pydantic records for every YAML kind and every table row the harness writes.

The JSON Schemas in ``harness/schemas/`` are generated from these models (``harness schemas``);
a test keeps the committed copies current.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

Role = Literal["system", "user", "assistant"]
SLUG = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"  # ids that name files and folders


class Strict(BaseModel):
    """Base for user-written records: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- constitution


class Example(Strict):
    """A short worked example that shows the judge how the rubric applies."""

    prompt: str = Field(description="The user's request in the example.")
    response: str = Field(description="The response being judged in the example.")
    score: int = Field(description="The score the rubric gives this response.")
    explanation: str = Field(default="", description="Why the response earns that score.")


class Principle(Strict):
    """One written principle of a constitution, with its rubric."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]*$", description="Stable identifier, e.g. 'honesty'.")
    statement: str = Field(description="The principle in one or two sentences.")
    rubric: dict[int, str] = Field(
        description="What each score on the scale means, keyed 1..N (contiguous from 1)."
    )
    critique_request: str = Field(
        description="Asks a model to critique a response against this principle."
    )
    revision_request: str = Field(
        description="Asks a model to rewrite a response so it meets this principle."
    )
    weight: float = Field(
        default=1.0, gt=0, description="Weight of the principle in overall scores."
    )
    pass_threshold: float = Field(description="A score at or above this passes.")
    examples: list[Example] = Field(default_factory=list, description="Optional few-shot examples.")

    @field_validator("rubric")
    @classmethod
    def _contiguous(cls, rubric: dict[int, str]) -> dict[int, str]:
        if sorted(rubric) != list(range(1, len(rubric) + 1)) or len(rubric) < 2:
            raise ValueError("rubric keys must be 1..N with N >= 2")
        return rubric

    @model_validator(mode="after")
    def _threshold_on_scale(self) -> Principle:
        if not 1 <= self.pass_threshold <= self.scale_max:
            raise ValueError(f"pass_threshold must lie on the rubric scale 1..{self.scale_max}")
        for ex in self.examples:
            if ex.score not in self.rubric:
                raise ValueError(f"example score {ex.score} is not on the rubric scale")
        return self

    @property
    def scale_max(self) -> int:
        """Highest score on the rubric."""
        return len(self.rubric)


class Constitution(Strict):
    """A named set of principles that responses are judged against."""

    schema_: str | None = Field(default=None, alias="$schema", description="Editor hint; ignored.")
    id: str = Field(description="Identifier of the constitution.")
    description: str = Field(default="", description="What the constitution is for.")
    principles: list[Principle] = Field(
        min_length=1, description="The principles, in report order."
    )

    @field_validator("principles")
    @classmethod
    def _unique(cls, principles: list[Principle]) -> list[Principle]:
        ids = [p.id for p in principles]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate principle ids: {', '.join(dupes)}")
        return principles

    def principle(self, pid: str) -> Principle:
        """The principle with this id."""
        for p in self.principles:
            if p.id == pid:
                return p
        raise KeyError(pid)


# --------------------------------------------------------------------------- suites


class Message(Strict):
    """One chat turn."""

    role: Role = Field(description="Who speaks: system, user or assistant.")
    content: str = Field(description="What they say.")


def _finite_scores(scores: dict[str, float]) -> dict[str, float]:
    bad = sorted(k for k, v in scores.items() if not math.isfinite(v))
    if bad:
        raise ValueError(f"human_scores must be finite numbers (not for {', '.join(bad)})")
    return scores


HumanScores = Annotated[
    dict[str, float],
    AfterValidator(_finite_scores),
    Field(
        description="Mean human rating per principle id, on the scale the raters used (e.g. "
        "{coherence: 2.67} on a 1-3 scale); only the order of ratings is compared with judges."
    ),
]
NRaters = Annotated[
    int | None, Field(ge=1, description="How many people rated the response, where known.")
]


class Candidate(Strict):
    """One response to a case, from a named generator, optionally with human ratings."""

    generator: str = Field(description="Name of the model or source that produced the response.")
    response: str = Field(description="The response text under judgment.")
    human_scores: HumanScores = Field(default_factory=dict)
    n_raters: NRaters = None


class HumanPreference(Strict):
    """A human label saying which of two candidates people preferred."""

    chosen: str = Field(description="Generator name of the preferred candidate.")
    rejected: str = Field(description="Generator name of the other candidate.")
    principle: str | None = Field(default=None, description="Principle the label is about, if any.")
    source: str = Field(default="", description="Where the label comes from.")


class Case(Strict):
    """One prompt with its candidate responses."""

    id: str = Field(description="Identifier, unique within the suite.")
    prompt: str | list[Message] = Field(
        description="A string, or a chat conversation ending with a user turn."
    )
    tags: list[str] = Field(
        default_factory=list, description="Free-form tags for filtering and reports."
    )
    reference: str | None = Field(default=None, description="Optional reference answer.")
    candidates: list[Candidate] = Field(
        default_factory=list, description="Inline candidate responses."
    )
    human_preference: HumanPreference | None = Field(
        default=None, description="Optional human label."
    )

    @field_validator("prompt")
    @classmethod
    def _conversation(cls, prompt: str | list[Message]) -> str | list[Message]:
        if isinstance(prompt, list):
            if not prompt:
                raise ValueError("a conversation needs at least one message")
            if prompt[-1].role != "user":
                raise ValueError("a conversation must end with a user turn")
        return prompt

    def messages(self) -> list[Message]:
        """The prompt as a list of chat messages."""
        if isinstance(self.prompt, str):
            return [Message(role="user", content=self.prompt)]
        return list(self.prompt)


class CandidateRow(Strict):
    """One line of a suite's candidates JSONL file (human ratings optional)."""

    case_id: str = Field(description="The case the response answers.")
    generator: str = Field(description="Name of the model or source that produced the response.")
    response: str = Field(description="The response text.")
    human_scores: HumanScores = Field(default_factory=dict)
    n_raters: NRaters = None


class Generator(Strict):
    """Metadata about a named generator."""

    description: str = Field(default="", description="What produced these responses.")
    parameters: float | None = Field(default=None, description="Parameter count, if known.")


class Suite(Strict):
    """A set of cases to judge, with optional defaults for the constitution and judges."""

    schema_: str | None = Field(default=None, alias="$schema", description="Editor hint; ignored.")
    id: str = Field(
        pattern=SLUG,
        description="Identifier of the suite; names run folders: letters, digits, '_', '.', '-'.",
    )
    description: str = Field(default="", description="What the suite tests.")
    constitution: str | None = Field(
        default=None, description="Default constitution: path or built-in name."
    )
    judges: list[str] = Field(
        default_factory=list, description="Default judges: paths or built-in names."
    )
    generators: dict[str, Generator] = Field(
        default_factory=dict, description="Generator metadata."
    )
    cases: list[Case] = Field(default_factory=list, description="Inline cases.")
    cases_file: str | None = Field(
        default=None, description="JSONL file of cases, relative to the suite."
    )
    candidates_file: str | None = Field(
        default=None,
        description="JSONL file of candidates (case_id, generator, response), relative to the suite.",
    )
    sources: list[str] = Field(
        default_factory=list, description="Where the data comes from, with licences."
    )


# --------------------------------------------------------------------------- judges


class RayActors(Strict):
    """How a judge runs under ``--executor ray``: its pool of actors and what each reserves."""

    actors: int = Field(
        default=1, ge=1, description="Ray actors for this judge; each holds one backend instance."
    )
    num_cpus: float = Field(default=1.0, ge=0, description="CPUs Ray reserves for each actor.")
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs Ray reserves for each actor.")


class JudgeConfig(Strict):
    """A judge: a backend with its options, and how to prompt it."""

    schema_: str | None = Field(default=None, alias="$schema", description="Editor hint; ignored.")
    id: str = Field(pattern=SLUG, description="Identifier shown in reports.")
    backend: str = Field(description="Backend name, e.g. transformers, openai, rules.")
    options: dict[str, object] = Field(
        default_factory=dict,
        description="Backend options; validated by the backend's own Options model.",
    )
    rationale: bool = Field(
        default=False, description="Ask the judge for a short written rationale."
    )
    max_concurrency: int = Field(
        default=8, ge=1, description="Requests in flight at once for this judge."
    )
    requests_per_minute: float | None = Field(
        default=None, gt=0, description="Cap on request starts per minute."
    )
    retries: int = Field(default=4, ge=0, description="Retries of a failed or malformed call.")
    principles: list[str] | None = Field(default=None, description="Only judge these principles.")
    description: str = Field(
        default="", description="What this judge is, and what it can and cannot do."
    )
    price_per_million_input: float | None = Field(
        default=None,
        ge=0,
        description="US dollars per million prompt tokens. With the output price, the judge's spend is shown "
        "and counted against --max-cost; unset means its calls are treated as free (a local model).",
    )
    price_per_million_output: float | None = Field(
        default=None,
        ge=0,
        description="US dollars per million generated tokens (see price_per_million_input).",
    )
    ray: RayActors = Field(
        default_factory=RayActors,
        description="Actor pool under --executor ray (max_concurrency then applies per actor); "
        "ignored by the local executor.",
    )

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        """What a call with these token counts costs, in US dollars (0 without prices)."""
        return (
            tokens_in * (self.price_per_million_input or 0.0)
            + tokens_out * (self.price_per_million_output or 0.0)
        ) / 1e6

    @property
    def priced(self) -> bool:
        """Whether any price is set (so spend is tracked)."""
        return self.price_per_million_input is not None or self.price_per_million_output is not None


# --------------------------------------------------------------------------- outputs


VerdictStatus = Literal["scored", "unscored", "error"]


class Verdict(BaseModel):
    """One judgment of one candidate against one principle by one judge (a row of
    verdicts.jsonl).
    """

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(description="Content hash of the work item; the cache key.")
    case_id: str = Field(description="The case judged.")
    generator: str = Field(description="Generator of the candidate judged.")
    principle: str = Field(description="Principle id.")
    judge: str = Field(description="Judge id.")
    status: VerdictStatus = Field(
        description="scored, unscored (answer unusable) or error (call failed)."
    )
    score: float | None = Field(
        default=None, description="Score on the rubric scale (expected value if a distribution)."
    )
    normalized: float | None = Field(default=None, description="Score mapped to 0..1.")
    distribution: list[float] | None = Field(
        default=None, description="P(score = k) for k = 1..N, when known."
    )
    passed: bool | None = Field(
        default=None, description="Score at or above the principle's pass threshold."
    )
    rationale: str = Field(default="", description="The judge's explanation, when asked for.")
    raw_output: str = Field(default="", description="What the judge returned, verbatim.")
    reason: str = Field(default="", description="Why the verdict is unscored or an error.")
    tokens_in: int = Field(default=0, description="Prompt tokens.")
    tokens_out: int = Field(default=0, description="Generated tokens.")
    latency_s: float = Field(default=0.0, description="Seconds spent on the judge call(s).")
    cached: bool = Field(default=False, description="Served from the persistent cache.")
    attempts: int = Field(default=1, description="Calls made, retries included.")
    truncated: bool = Field(
        default=False,
        description="The judge saw a cut version: the prompt was too long for it, so untrusted "
        "text (conversation or response) was shortened.",
    )


class PairVerdict(BaseModel):
    """One ordered pairwise judgment (a row of pairwise.jsonl): which of two shown responses is
    better.
    """

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(description="Content hash of the work item.")
    case_id: str = Field(description="The case judged.")
    principle: str = Field(description="Principle id.")
    judge: str = Field(description="Judge id.")
    first: str = Field(description="Generator of the response shown first (as A).")
    second: str = Field(description="Generator of the response shown second (as B).")
    status: VerdictStatus = Field(
        description="scored, unscored (answer unusable) or error (call failed)."
    )
    p_first: float | None = Field(
        default=None, description="P(first shown is better), ties counted half."
    )
    distribution: list[float] | None = Field(
        default=None, description="P(A), P(B), P(tie) when log-probs were read."
    )
    winner: Literal["first", "second", "tie"] | None = Field(
        default=None, description="The judge's pick."
    )
    rationale: str = Field(default="", description="The judge's explanation, when asked for.")
    raw_output: str = Field(default="", description="What the judge returned, verbatim.")
    reason: str = Field(default="", description="Why the judgment is unscored or an error.")
    tokens_in: int = Field(default=0, description="Prompt tokens.")
    tokens_out: int = Field(default=0, description="Generated tokens.")
    latency_s: float = Field(default=0.0, description="Seconds spent on the judge call(s).")
    cached: bool = Field(default=False, description="Served from the persistent cache.")
    attempts: int = Field(default=1, description="Calls made, retries included.")
    truncated: bool = Field(
        default=False,
        description="The judge saw a cut version: the prompt was too long for it, so untrusted "
        "text (conversation or response) was shortened.",
    )


class Generation(BaseModel):
    """One generated text (a sampled candidate, a critique or a revision): a row of
    generations.jsonl.
    """

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(description="Content hash of the work item.")
    case_id: str = Field(description="The case the text belongs to.")
    generator: str = Field(
        description="The candidate concerned (critique, revision) or the new sample's name."
    )
    principle: str = Field(
        default="", description="Principle of a critique or revision; empty for samples."
    )
    judge: str = Field(description="Id of the model config that wrote the text.")
    step: Literal["sample", "critique", "revision"] = Field(description="What the text is.")
    status: VerdictStatus = Field(
        description="scored (text written), unscored (empty answer) or error."
    )
    text: str = Field(default="", description="The generated text.")
    reason: str = Field(default="", description="Why there is no text.")
    tokens_in: int = Field(default=0, description="Prompt tokens.")
    tokens_out: int = Field(default=0, description="Generated tokens.")
    latency_s: float = Field(default=0.0, description="Seconds spent on the call(s).")
    cached: bool = Field(default=False, description="Served from the persistent cache.")
    attempts: int = Field(default=1, description="Calls made, retries included.")
    truncated: bool = Field(
        default=False,
        description="The judge saw a cut version: the prompt was too long for it, so untrusted "
        "text (conversation or response) was shortened.",
    )


class InputRecord(BaseModel):
    """An input file of a run, with its content hash."""

    path: str
    sha256: str


class JudgeUsage(BaseModel):
    """What one judge did during one invocation of a run."""

    items: int = Field(default=0, description="Items finished (rows written), cache hits included.")
    calls: int = Field(default=0, description="Calls made to the judge, retries included.")
    cache_hits: int = Field(
        default=0, description="Items served from the persistent cache (no call, no spend)."
    )
    scored: int = 0
    unscored: int = 0
    errors: int = 0
    retries: dict[str, int] = Field(
        default_factory=dict,
        description="Failed calls by cause (429, 5xx, timeout, connection, malformed, invalid); each was retried "
        "unless it was an item's last allowed attempt.",
    )
    tokens_in: int = Field(default=0, description="Prompt tokens paid for (cache hits excluded).")
    tokens_out: int = Field(
        default=0, description="Generated tokens paid for (cache hits excluded)."
    )
    spend_usd: float | None = Field(
        default=None, description="What the calls cost; null for an unpriced judge."
    )
    lowest_concurrency: int | None = Field(
        default=None, description="Lowest concurrency limit after 429 cuts."
    )
    parameters: int | None = Field(
        default=None, description="The judge model's parameter count, when known."
    )
    trained_parameters: int | None = Field(
        default=None,
        description="Parameters fitted for judging (a distilled student's heads), when known.",
    )


class Session(BaseModel):
    """One invocation of a run: the first ``harness run``, a rerun of the same command, or
    ``--resume``.
    """

    started: str = Field(description="UTC start time, ISO 8601.")
    elapsed_s: float = Field(description="Seconds spent judging.")
    judges: dict[str, JudgeUsage] = Field(default_factory=dict, description="Usage per judge id.")
    generation_spend_usd: float = Field(
        default=0.0, description="Spend on generating responses (kept apart)."
    )
    spend_usd: float = Field(
        default=0.0, description="Total spend of this invocation: judges plus generation."
    )
    max_cost_usd: float | None = Field(
        default=None, description="The --max-cost budget of this invocation."
    )
    stopped: str = Field(
        default="", description="Why the invocation stopped before every item was done, if so."
    )


class Spend(BaseModel):
    """Spend of the whole run in US dollars, recomputed from its verdict logs (cache hits are free)."""

    judges: dict[str, float | None] = Field(
        default_factory=dict, description="Per judge id; null if unpriced."
    )
    generation: float = Field(
        default=0.0, description="Spend on generating responses, apart from judging."
    )
    total: float = Field(default=0.0, description="Judges plus generation.")


class RunManifest(BaseModel):
    """manifest.json: what a run judged, with what, and how. Never holds secrets."""

    run_id: str
    created: str
    suite: InputRecord
    constitution: InputRecord
    judges: list[InputRecord]
    judge_configs: list[dict[str, object]]
    versions: dict[str, str]
    seed: int
    n_items: int
    protocol: dict[str, object] = Field(default_factory=dict)
    generators: dict[str, Generator] = Field(
        default_factory=dict, description="The suite's generator metadata."
    )
    status: Literal["running", "complete", "incomplete"] = "running"
    counts: dict[str, int] = Field(default_factory=dict)
    sessions: list[Session] = Field(
        default_factory=list,
        description="Each invocation that judged something: calls, retries, cache hits, spend.",
    )
    spend: Spend | None = Field(
        default=None, description="Spend of the whole run, per judge and for generation."
    )
