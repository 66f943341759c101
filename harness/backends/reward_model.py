"""The ``reward_model`` backend: a student reward model (see :mod:`harness.student`) used as a
judge.

No text is generated. For each request the student computes a scalar reward from the base model's
features of (conversation, response), with the head that belongs to the request's principle, less a
small penalty per response token beyond the feature window (so padding or repeating a long answer
never pays; see :mod:`harness.student.train`):

- pointwise: the reward is mapped onto the principle's 1..N rubric by the head's stored calibration
  (``1 + (N - 1) · sigmoid((r - center) / spread)``). The answer is a probability split between the
  two scale points around that score (so the verdict's expected score is exactly the calibrated
  score) and the text ``"<rounded score> student reward r=…"``.
- pairwise: P(first is better) = sigmoid(r_first - r_second), answered as log-probs of "A" and "B"
  (no tie).

Requests must carry their :class:`~harness.backends.base.Subject` (the pointwise and pairwise
request builders always set it; ``response_b`` marks a pairwise request). Only principles with a
head are judged.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.backends.base import Backend, BackendRequest, BackendResponse, Subject
from harness.errors import ConfigError, JudgeError
from harness.student.artefact import Student, load_student
from harness.student.features import FeatureExtractor, MemoryCache

#: Pairwise probabilities are kept this far from 0 and 1, so their logs stay finite.
P_FLOOR = 1e-6


def scale_distribution(score: float, scale_max: int) -> dict[str, float]:
    """Log-probs over the two scale points around ``score`` whose expected value is ``score``."""
    score = min(max(score, 1.0), float(scale_max))
    low = min(math.floor(score), scale_max - 1)
    upper = score - low
    probs = {str(low): 1 - upper, str(low + 1): upper}
    return {k: math.log(p) for k, p in probs.items() if p > 0}


class RewardModelBackend(Backend):
    """Judges with a distilled student reward model: pointwise calibrated scores, pairwise
    Bradley–Terry.
    """

    name: ClassVar[str] = "reward_model"
    deterministic = True

    class Options(BaseModel):
        """Options of the ``reward_model`` backend."""

        model_config = ConfigDict(extra="forbid")

        student: str = Field(
            default="embedded",
            description="A student artefact folder (student.json, weights.npz, TRAINING_CARD.md), or 'embedded' "
            "for the student committed in students/embedded.",
        )
        heads: dict[str, str] = Field(
            default_factory=dict,
            description="Principle id -> head name. A principle not listed uses the head of the same name if the "
            "student has one; a principle with no head is not judged by this backend.",
        )
        device: Literal["cpu", "cuda", "auto"] = Field(
            default="auto", description="Where to run the base model."
        )
        threads: int | None = Field(
            default=None, ge=1, description="CPU threads for torch; default: torch's own."
        )
        batch_size: int = Field(default=16, ge=1, description="Requests handed over per call.")

    options: Options

    def __init__(self, options: BaseModel, *, judge: str | None = None):
        super().__init__(options, judge=judge)
        assert isinstance(options, self.Options)
        self.student: Student = load_student(options.student)
        unknown = sorted(set(options.heads.values()) - set(self.student.heads))
        if unknown:
            raise ConfigError(
                f"judge {judge or '?'}: student {options.student!r} has no head(s) {unknown}; "
                f"its heads: {sorted(self.student.heads)}"
            )
        self.batch_size = options.batch_size
        self._extractor: FeatureExtractor | None = None
        self._lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        """Options plus the student's content hash: retraining a student invalidates cached
        verdicts.
        """
        return {**super().identity(), "student_sha256": self.student.digest()}

    @classmethod
    def volatile_options(cls) -> set[str]:
        """Options that change speed, never answers."""
        return {"device", "threads", "batch_size"}

    def size(self) -> dict[str, int]:
        """Base model plus heads (empty before the first batch); the heads (and adapters) are what
        was trained.
        """
        if self._extractor is None:
            return {}
        heads = sum(int(h.weight.size) for h in self.student.heads.values())
        adapters = sum(int(v.size) for v in (self.student.lora or {}).values())
        base = int(
            sum(p.numel() for p in self._extractor.base.parameters())
        )  # adapters, once loaded, included
        return {"parameters": base + heads, "trained_parameters": heads + adapters}

    def calibration_curve(self) -> dict[str, Any] | None:
        """The student's reward-to-rubric calibration per head (``calibration.json``), if any."""
        return self.student.calibration

    def head_for(self, principle: str) -> str | None:
        """The head that judges ``principle``, if any."""
        name = self.options.heads.get(principle, principle)
        return name if name in self.student.heads else None

    def covers(self, principle: str) -> bool:
        """Only principles with a head are judged."""
        return self.head_for(principle) is not None

    def reads_logprobs(self) -> bool:
        """Answers come as a distribution (pointwise over the scale, pairwise over A/B)."""
        return True

    # -- model side

    def extractor(self) -> FeatureExtractor:
        """The base model's feature extractor, loaded on first use (with the student's adapters, if
        any).
        """
        if self._extractor is None:
            cfg = self.student.config
            ex = FeatureExtractor.load(
                cfg.features,
                device=self.options.device,
                threads=self.options.threads,
                disk_cache=False,
                batch_size=self.options.batch_size,
            )
            if ex.model_id != cfg.base_model_id:
                raise JudgeError(
                    f"student {self.options.student!r} was trained on features of {cfg.base_model_id}, "
                    f"but {ex.model_id} was loaded; retrain it with 'harness distill'"
                )
            if self.student.lora is not None and cfg.lora is not None:
                from harness.student.lora import load_lora

                load_lora(ex.base, cfg.lora, self.student.lora)
                ex.namespace += f"-{self.student.digest()[:12]}"
            ex.cache = MemoryCache()
            self._extractor = ex
        return self._extractor

    def rewards(self, subjects: list[Subject]) -> list[list[float]]:
        """Rewards of each subject's response (and ``response_b`` for pairwise), with its
        principle's head.
        """
        return self.rewards_and_tokens(subjects)[0]

    def rewards_and_tokens(self, subjects: list[Subject]) -> tuple[list[list[float]], list[int]]:
        """``rewards``, and the tokens each subject put through the model (from the same
        encoding).
        """
        ex = self.extractor()
        items = [(s.prompt, r) for s in subjects for r in _responses(s)]
        encoded = [ex.encode(p, r) for p, r in items]
        feats, unseen = ex.extract_encoded(encoded), ex.unseen(items)
        out, tokens, i = [], [], 0
        for s in subjects:
            name = self.head_for(s.principle)
            assert name is not None
            k = len(_responses(s))
            head = self.student.heads[name]
            out.append(
                [float(r) for r in head.reward(feats[i : i + k], ex.spec.layers, unseen[i : i + k])]
            )
            tokens.append(len(encoded[i].prompt) + sum(len(e.response) for e in encoded[i : i + k]))
            i += k
        return out, tokens

    def _answer(
        self, subject: Subject, rewards: list[float], tokens: int, latency: float
    ) -> BackendResponse:
        name = self.head_for(subject.principle)
        assert name is not None
        if subject.response_b is None:
            score = float(self.student.heads[name].score(rewards[0], subject.scale_max))
            text = (
                f"{round(score)} student reward r={rewards[0]:.3f} "
                f"(head {name}; score {score:.2f} of {subject.scale_max})"
            )
            return BackendResponse(
                text=text,
                choice_logprobs=scale_distribution(score, subject.scale_max),
                tokens_in=tokens,
                latency_s=latency,
            )
        p = min(max(1 / (1 + math.exp(rewards[1] - rewards[0])), P_FLOOR), 1 - P_FLOOR)
        text = f"{'A' if p >= 0.5 else 'B'} student rewards r_A={rewards[0]:.3f}, r_B={rewards[1]:.3f} (head {name})"
        return BackendResponse(
            text=text,
            choice_logprobs={"A": math.log(p), "B": math.log(1 - p)},
            tokens_in=tokens,
            latency_s=latency,
        )

    def _complete_blocking(self, requests: list[BackendRequest]) -> list[BackendResponse]:
        subjects = [_subject(r, self) for r in requests]
        start = time.perf_counter()
        with self._lock:
            try:
                rewards, tokens = self.rewards_and_tokens(subjects)
            except (RuntimeError, ValueError) as exc:
                raise JudgeError(
                    f"reward_model backend failed on a batch of {len(requests)}: {exc}"
                ) from exc
        each = (time.perf_counter() - start) / len(requests)
        return [
            self._answer(s, r, t, each) for s, r, t in zip(subjects, rewards, tokens, strict=True)
        ]

    async def complete(self, requests: list[BackendRequest]) -> list[BackendResponse]:
        """Score a batch in a worker thread, so the event loop stays free."""
        if not requests:
            return []
        return await asyncio.to_thread(self._complete_blocking, requests)

    async def aclose(self) -> None:
        """Drop the base model."""
        with self._lock:
            self._extractor = None


def _responses(s: Subject) -> list[str]:
    return [s.response] if s.response_b is None else [s.response, s.response_b]


def _subject(request: BackendRequest, backend: RewardModelBackend) -> Subject:
    s = request.subject
    if s is None:
        raise JudgeError(
            "the reward_model backend needs the request's subject (principle, prompt, response)"
        )
    if backend.head_for(s.principle) is None:
        raise JudgeError(f"the student has no head for principle {s.principle!r}")
    return s
