"""Frozen features of a local causal LM for (conversation, response) pairs, cached on disk.

What one feature array is (recipe ``pool-v1``):

1. The conversation is rendered with the model's chat template plus the assistant header, tokenised,
   and its last ``prompt_tokens`` tokens kept (the end of a conversation matters most for the
   reply). Turns that lie wholly before that window are dropped first by
   :func:`harness.dialogue.fit_dialogue`, which keeps the turns nearest the reply; the reply itself
   is never part of that cut.
2. The response is tokenised on its own, cut to its first ``response_tokens - 1`` tokens, and the
   model's end-of-turn token appended, so even an empty response has one token to read. Message
   contents and the response are tokenised as plain text: a special token's string written in them
   (``<|im_end|>``) stays text and never becomes the control token.
3. One forward pass over ``[prompt | response]``. For each hidden layer in ``layers`` (index 0 is
   the embeddings, the last is the final normed output) two pools are kept: the mean over the
   response tokens (``mean``) and the state at the end-of-turn token (``end``).

So each text gives an array ``[2 pools, len(layers), hidden]``, rounded to float16 precision (and
stored so: the cache stays small, and a cached array equals a fresh one); heads pick blocks of it.

Responses to the same conversation share one forward pass of the prompt: its KV cache is computed
once and expanded over a right-padded batch of responses, which is exact for a causal model.
Features are cached under
``<user cache>/features/<namespace>/`` keyed by a hash of the token ids, so a text is computed once.
torch and transformers are imported lazily.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness.dialogue import fit_dialogue
from harness.local.chat_tokens import chat_pieces, text_ids
from harness.paths import cache_dir
from harness.records import Message

if TYPE_CHECKING:
    import torch

    from harness.local.loading import LoadedModel

RECIPE = "pool-v1"
POOLS = ("mean", "end")

Item = tuple[Sequence[Message], str]
Progress = Callable[[int, int], None]


class FeatureSpec(BaseModel):
    """Which model and which pooled states make a feature array (part of a student's config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        default="embedded:smollm2", description="Base model, as the transformers backend names it."
    )
    prompt_tokens: int = Field(
        default=192, ge=8, description="Conversation tokens kept (the last ones)."
    )
    response_tokens: int = Field(
        default=128, ge=2, description="Response tokens kept (the first ones, end token included)."
    )
    layers: tuple[int, ...] = Field(
        default=(10, 15, 20, 25, 30), description="hidden_states indices pooled."
    )
    recipe: str = Field(default=RECIPE, description="Version of this feature recipe.")

    def digest(self) -> str:
        """Short hash of the spec, for cache folder names."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Encoded:
    """A (conversation, response) pair as the token ids the model sees."""

    prompt: tuple[int, ...]
    response: tuple[int, ...]

    def key(self, namespace: str) -> str:
        """Cache key: the namespace (model, recipe, adapter) and the exact tokens."""
        payload = json.dumps([namespace, self.prompt, self.response], separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()


class ArrayCache(Protocol):
    """Where computed feature arrays are kept, by key."""

    def get(self, key: str) -> np.ndarray | None:
        """The array stored under ``key``, or None."""
        ...

    def put(self, key: str, array: np.ndarray) -> None:
        """Store ``array`` under ``key``."""
        ...


class MemoryCache:
    """Recently computed feature arrays in memory, least recently used evicted first."""

    def __init__(self, size: int = 4096):
        self.size = size
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, key: str) -> np.ndarray | None:
        """The cached array, if any."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: str, array: np.ndarray) -> None:
        """Remember an array."""
        self._items[key] = array
        while len(self._items) > self.size:
            self._items.popitem(last=False)


class FeatureCache:
    """Feature arrays on disk, one ``.npy`` per text, written atomically."""

    def __init__(self, root: Path):
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """The cached array, or None (a torn file counts as missing)."""
        path = self._path(key)
        try:
            return np.load(path).astype(np.float32) if path.is_file() else None
        except (OSError, ValueError):
            return None

    def put(self, key: str, array: np.ndarray) -> None:
        """Store ``array`` under ``key`` (write to a temporary file, then rename)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array.astype(np.float16))
        os.replace(tmp, path)


def default_cache(namespace: str) -> FeatureCache:
    """The user-cache folder for one namespace."""
    return FeatureCache(cache_dir() / "features" / namespace)


# --------------------------------------------------------------------------- model side


def prompt_kv(base: Any, prompt: Sequence[int], device: str) -> list[tuple[Any, Any]]:
    """Keys and values of every layer for the prompt (batch 1)."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=base.config)
    base(
        input_ids=torch.tensor([list(prompt)], device=device), past_key_values=cache, use_cache=True
    )
    layers: list[Any] = list(cache.layers)
    return [(layer.keys, layer.values) for layer in layers]


def pool_responses(
    base: Any,
    kv: list[tuple[Any, Any]],
    n_prompt: int,
    responses: Sequence[Sequence[int]],
    layers: Sequence[int],
    pad_id: int,
    device: str,
) -> torch.Tensor:
    """Pooled states ``[rows, 2, layers, hidden]`` of responses that continue one prompt
    (differentiable).
    """
    import torch
    from transformers import DynamicCache

    rows, width = len(responses), max(len(r) for r in responses)
    ids = torch.full((rows, width), pad_id, dtype=torch.long)
    mask = torch.zeros((rows, n_prompt + width), dtype=torch.long)
    mask[:, :n_prompt] = 1
    for i, r in enumerate(responses):
        ids[i, : len(r)] = torch.tensor(list(r))
        mask[i, n_prompt : n_prompt + len(r)] = 1
    cache = DynamicCache(
        ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in kv],
        config=base.config,
    )
    positions = (n_prompt + torch.arange(width)).expand(rows, -1)
    out = base(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        past_key_values=cache,
        use_cache=True,
        output_hidden_states=True,
    )
    keep = mask[:, n_prompt:].to(device).unsqueeze(-1).float()
    last = keep.squeeze(-1).sum(1).long() - 1
    pools = []
    for layer in layers:
        h = out.hidden_states[layer].float()
        pools.append(
            torch.stack(
                [(h * keep).sum(1) / keep.sum(1), h[torch.arange(rows, device=h.device), last]], 1
            )
        )
    return torch.stack(pools, 2)


class FeatureExtractor:
    """Computes (and caches) feature arrays for (conversation, response) pairs with a loaded model."""

    def __init__(
        self,
        spec: FeatureSpec,
        local: LoadedModel,
        cache: ArrayCache | None = None,
        batch_size: int = 16,
        adapter: str = "",
    ):
        """``adapter`` names weights added to the model (a LoRA student), so its features are cached
        apart.
        """
        self.spec, self.local, self.batch_size = spec, local, batch_size
        self.namespace = f"{self.model_id}-{spec.digest()}{'-' + adapter if adapter else ''}"
        self.cache: ArrayCache | None = cache
        tok = local.tokenizer
        self.end_id = (
            tok.convert_tokens_to_ids("<|im_end|>")
            if "<|im_end|>" in tok.get_vocab()
            else tok.eos_token_id
        )
        self.base = local.model.model if hasattr(local.model, "model") else local.model

    @classmethod
    def load(
        cls,
        spec: FeatureSpec,
        *,
        device: str = "auto",
        threads: int | None = None,
        disk_cache: bool = True,
        batch_size: int = 16,
    ) -> FeatureExtractor:
        """Load the spec's model (GGUF converted once into the model cache).

        Features are cached on disk (``disk_cache``) or else in memory. On a CPU shared with other
        work,
        ``threads=1`` is often faster than more threads fighting over the same cores.
        """
        from harness.local.loading import load_causal_lm

        local = load_causal_lm(spec.model, device=device, threads=threads)
        extractor = cls(spec, local, batch_size=batch_size)
        extractor.cache = default_cache(extractor.namespace) if disk_cache else MemoryCache()
        return extractor

    @property
    def model_id(self) -> str:
        """Name of the loaded weights: the converted-model folder (GGUF stem and hash) or the model
        path.
        """
        return Path(self.local.report.path).name

    @property
    def hidden(self) -> int:
        """Width of one pooled state."""
        return int(self.base.config.hidden_size)

    def encode(self, prompt: Sequence[Message], response: str) -> Encoded:
        """Token ids of the conversation (end kept) and of the response (start kept, end token
        appended).
        """
        tok = self.local.tokenizer
        # Turns wholly outside the window are dropped first (a long dialogue costs nothing);
        # `cover` keeps the turn that crosses the window, so the kept tail is what the whole
        # dialogue gives. Contents are plain text: "<|im_end|>" in a message is not the token.
        turns = fit_dialogue(prompt, self.spec.prompt_tokens, self.count_tokens, cover=True)
        chat = [{"role": m.role, "content": m.content} for m in turns]
        ids = [t for p in chat_pieces(tok, chat) for t in p.ids][-self.spec.prompt_tokens :]
        body = text_ids(tok, response)[: self.spec.response_tokens - 1]
        return Encoded(tuple(ids), (*body, self.end_id))

    def count_tokens(self, text: str) -> int:
        """Tokens of a text on its own (no special tokens)."""
        return len(text_ids(self.local.tokenizer, text))

    def unseen(self, items: Sequence[Item]) -> np.ndarray:
        """How many tokens of each response fall beyond the window (cut off, never seen by a
        head).
        """
        tok, keep = self.local.tokenizer, self.spec.response_tokens - 1
        return np.array([max(0, len(text_ids(tok, r)) - keep) for _, r in items])

    def extract(self, items: Sequence[Item], progress: Progress | None = None) -> np.ndarray:
        """Feature arrays ``[n, 2, layers, hidden]`` for the items, computing only what is not
        cached.
        """
        return self.extract_encoded([self.encode(p, r) for p, r in items], progress)

    def extract_encoded(
        self, encoded: Sequence[Encoded], progress: Progress | None = None
    ) -> np.ndarray:
        """``extract`` for items already encoded (a caller that also needs the token ids encodes
        once).
        """
        found: dict[Encoded, np.ndarray] = {}
        for e in set(encoded):
            hit = self.cache.get(e.key(self.namespace)) if self.cache else None
            if hit is not None:
                found[e] = hit
        found.update(self._compute([e for e in dict.fromkeys(encoded) if e not in found], progress))
        shape = (0, len(POOLS), len(self.spec.layers), self.hidden)
        return np.stack([found[e] for e in encoded]) if encoded else np.zeros(shape, np.float32)

    def _compute(self, todo: list[Encoded], progress: Progress | None) -> dict[Encoded, np.ndarray]:
        """Run the model over texts grouped by prompt; cache and return the arrays."""
        import torch

        groups: dict[tuple[int, ...], list[Encoded]] = {}
        for e in todo:
            groups.setdefault(e.prompt, []).append(e)
        out: dict[Encoded, np.ndarray] = {}
        meter = _Meter(len(todo), progress)
        with torch.inference_mode():
            for prompt, members in sorted(groups.items(), key=lambda g: len(g[0])):
                for e, arr in zip(members, self._group(prompt, members), strict=True):
                    out[e] = arr
                    if self.cache:
                        self.cache.put(e.key(self.namespace), arr)
                meter.step(len(members), len(prompt) + sum(len(e.response) for e in members))
        return out

    def _group(self, prompt: tuple[int, ...], members: list[Encoded]) -> list[np.ndarray]:
        """Arrays for responses that share one prompt, in batches of similar length."""
        kv = prompt_kv(self.base, prompt, self.local.device)
        order = sorted(range(len(members)), key=lambda i: len(members[i].response))
        arrays: list[np.ndarray] = [np.zeros(0)] * len(members)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            pooled = pool_responses(
                self.base,
                kv,
                len(prompt),
                [members[i].response for i in idx],
                self.spec.layers,
                self.local.pad_id,
                self.local.device,
            )
            for i, arr in zip(idx, pooled.cpu().numpy().astype(np.float16), strict=True):
                arrays[i] = arr.astype(np.float32)
        return arrays


class _Meter:
    """Progress of a feature computation: texts done, tokens per second, ETA (to stderr or a
    callback).
    """

    def __init__(self, total: int, callback: Progress | None):
        self.total, self.done, self.tokens, self.callback = total, 0, 0, callback
        self.start = self.last = time.monotonic()

    def step(self, texts: int, tokens: int) -> None:
        self.done += texts
        self.tokens += tokens
        if self.callback:
            self.callback(self.done, self.total)
            return
        now = time.monotonic()
        if now - self.last > 15 or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / max(rate, 1e-9)
            print(
                f"features: {self.done}/{self.total} texts, {self.tokens / (now - self.start):.0f} tok/s, "
                f"ETA {eta:.0f}s",
                file=sys.stderr,
                flush=True,
            )


def select(
    features: np.ndarray, blocks: Sequence[tuple[str, int]], layers: Sequence[int]
) -> np.ndarray:
    """Concatenate the (pool, layer) blocks of feature arrays ``[n, 2, L, H]`` into ``[n, d]``."""
    parts = [features[:, POOLS.index(pool), list(layers).index(layer)] for pool, layer in blocks]
    return np.concatenate(parts, axis=1) if parts else np.zeros((len(features), 0), np.float32)
