"""Batch planning, the prefix KV store and the CPU thread tuner of the local ``transformers`` backend.

Pure bookkeeping: nothing here runs a model. :func:`plan_batches` decides which requests go together,
:class:`PrefixStore` keeps computed prefix key/value caches for reuse, and :class:`ThreadTuner` picks a
CPU thread count from timed batches.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: KV of a prefix: one (keys, values) pair per layer, each [1, kv_heads, tokens, head_dim].
KV = list[tuple["torch.Tensor", "torch.Tensor"]]

#: Fixed cost of one extra forward pass, in prompt tokens, used to weigh padding against more batches.
#: On a GPU a forward pass is cheap per token and expensive to launch, so batches should stay large.
BATCH_OVERHEAD_TOKENS = {"cpu": 24, "cuda": 4096}

#: Memory the prefix store may hold.
PREFIX_STORE_BYTES = 256 * 2**20


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences of the same type (list or tuple)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    # Binary search with slice comparisons: they run in C, a per-token Python loop would not.
    lo, hi = 0, n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if a[:mid] == b[:mid] else (lo, mid)
    return lo


@dataclass(frozen=True)
class Batch:
    """Indices of requests to run in one forward pass, and how many leading tokens they share."""

    indices: list[int]
    prefix: int


def plan_batches(seqs: Sequence[list[int]], max_batch: int, overhead: int) -> list[Batch]:
    """Cut requests into forward batches, minimising the tokens computed.

    Two orders are tried: by token ids (requests sharing leading tokens are adjacent) and by length
    (little padding). For each, a dynamic programme splits the order into runs of at most ``max_batch``;
    a run costs its padded suffix tokens, the part of its shared prefix not shared by all requests, and
    ``overhead``. The cheaper plan wins. Each batch's prefix leaves every request at least one token,
    whose logits are read.
    """
    if not seqs:
        return []
    orders = [sorted(range(len(seqs)), key=lambda i: seqs[i]), sorted(range(len(seqs)), key=lambda i: len(seqs[i]))]
    plans = [_plan_order(seqs, order, max_batch, overhead) for order in orders]
    return min(plans, key=lambda plan: plan[0])[1]


def _plan_order(seqs: Sequence[list[int]], order: list[int], max_batch: int,
                overhead: int) -> tuple[float, list[Batch]]:
    """Best split of ``order`` into contiguous batches, with its cost in tokens."""
    lens = [len(seqs[k]) for k in order]
    # The shared prefix of a run is the least common prefix of neighbours in it, in any order.
    adjacent = [common_prefix(seqs[a], seqs[b]) for a, b in itertools.pairwise(order)]
    base = min([*adjacent, *(n - 1 for n in lens)])
    best = [0.0] + [float("inf")] * len(order)
    cut = [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        shared, shortest, longest = 1 << 30, 1 << 30, 0
        for i in range(j - 1, max(-1, j - 1 - max_batch), -1):
            if i < j - 1:
                shared = min(shared, adjacent[i])
            shortest, longest = min(shortest, lens[i]), max(longest, lens[i])
            prefix = min(shared, shortest - 1)
            cost = best[i] + (j - i) * (longest - prefix) + (prefix - base) + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    batches, j = [], len(order)
    while j > 0:
        i = cut[j]
        batches.append(Batch(order[i:j], min([*adjacent[i : j - 1], *(n - 1 for n in lens[i:j])])))
        j = i
    return best[-1], batches[::-1]


# --------------------------------------------------------------------------- model side


class PrefixStore:
    """Recently computed prefix KV caches, least recently used evicted first, bounded in bytes."""

    def __init__(self, max_bytes: int = PREFIX_STORE_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], KV] = OrderedDict()

    def closest(self, tokens: Sequence[int]) -> tuple[int, KV | None]:
        """The stored KV sharing the most leading tokens with ``tokens``, cut to that many tokens."""
        best_n, best_key, tokens = 0, None, tuple(tokens)
        for key in self._entries:
            n = common_prefix(key, tokens)
            if n > best_n:
                best_n, best_key = n, key
        if best_key is None:
            return 0, None
        self._entries.move_to_end(best_key)
        kv = [(k[:, :, :best_n], v[:, :, :best_n]) for k, v in self._entries[best_key]]
        return best_n, kv

    def put(self, tokens: Sequence[int], kv: KV) -> None:
        """Remember ``kv`` for ``tokens``, evicting old entries beyond the byte budget."""
        self._entries[tuple(tokens)] = kv
        self._entries.move_to_end(tuple(tokens))
        while len(self._entries) > 1 and self._bytes() > self.max_bytes:
            self._entries.popitem(last=False)

    def _bytes(self) -> int:
        return sum(t.numel() * t.element_size() for kv in self._entries.values() for pair in kv for t in pair)

    def clear(self) -> None:
        """Forget every prefix."""
        self._entries.clear()


class ThreadTuner:
    """Picks the CPU thread count that runs fastest *now*, from the timings of real forward passes.

    torch defaults to one thread per physical core. When other processes keep a core busy, every
    parallel region waits for the thread stuck behind them: on a shared 2-core machine, 2 threads ran
    5x slower than 1. So each candidate is timed on real batches (seconds per token, smoothed), the
    fastest is used, and now and then another is tried again, since the load changes.
    """

    def __init__(self, cores: int, explore_every: int = 16, smoothing: float = 0.3):
        self.candidates = sorted({cores, max(1, cores // 2), 1}, reverse=True)
        self.explore_every, self.smoothing = explore_every, smoothing
        self.cost: dict[int, float] = {}
        self._batches = 0
        self._warm = False

    def choose(self) -> int:
        """Thread count for the next batch."""
        untried = [c for c in self.candidates if c not in self.cost]
        if untried:
            return untried[0]
        self._batches += 1
        best = min(self.cost, key=self.cost.__getitem__)
        if self._batches % self.explore_every == 0 and len(self.candidates) > 1:
            others = [c for c in self.candidates if c != best]
            return others[(self._batches // self.explore_every) % len(others)]
        return best

    @property
    def best(self) -> int | None:
        """The fastest thread count measured so far."""
        return min(self.cost, key=self.cost.__getitem__) if self.cost else None

    def record(self, threads: int, seconds: float, tokens: int) -> None:
        """Fold one timed batch into the estimate for ``threads``."""
        if not self._warm:  # the first batch pays one-time kernel set-up: it would condemn its thread count
            self._warm = True
            return
        per_token = seconds / max(1, tokens)
        old = self.cost.get(threads)
        self.cost[threads] = per_token if old is None else old + self.smoothing * (per_token - old)
