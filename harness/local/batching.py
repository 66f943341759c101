"""Batch planning, the prefix KV store and the CPU thread tuner of the local ``transformers``
backend.

Pure bookkeeping: nothing here runs a model. :func:`plan_batches` decides which requests go
together, :class:`PrefixStore` keeps computed prefix key/value caches for reuse, and
:class:`ThreadTuner` picks a CPU thread count from timed batches.
"""

from __future__ import annotations

import itertools
import statistics
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: KV of a prefix: one (keys, values) pair per layer, each [1, kv_heads, tokens, head_dim].
KV = list[tuple["torch.Tensor", "torch.Tensor"]]

# : Fixed cost of one forward pass, in prompt tokens, used to weigh padding and prefix passes
# against more : passes. Measured with ``bench/local_judge.py`` on the embedded model (2 CPU cores):
# a pass costs about 55 ms : before its first token, and a token about 1.8 ms in float32 but 0.55 ms
# in bfloat16 (AMX matmuls). On a : GPU a forward pass is cheap per token and expensive to launch,
# so batches should stay large.
BATCH_OVERHEAD_TOKENS = {
    ("cpu", "float32"): 32,
    ("cpu", "bfloat16"): 96,
    ("cuda", "float32"): 4096,
    ("cuda", "bfloat16"): 4096,
}

#: Memory the prefix store may hold. Batches go by principle, so the live prefixes are a few
#: (system prompt, principle and rubric, a shared conversation): SmolLM2-135M keeps 46 KB a token,
#: so 96 MB holds about 2,000 prefix tokens, and a run stays within 300 MB of the model's memory.
PREFIX_STORE_BYTES = 96 * 2**20


def overhead_tokens(device: str, dtype: str) -> int:
    """:data:`BATCH_OVERHEAD_TOKENS` for a device ("cuda:1" counts as "cuda") and dtype."""
    return BATCH_OVERHEAD_TOKENS.get((device.split(":")[0], dtype), 32)


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


def plan_batches(
    seqs: Sequence[list[int]], max_batch: int, overhead: int, known: Sequence[int] | None = None
) -> list[Batch]:
    """Cut requests into forward batches, minimising the cost in tokens.

    Two orders are tried: by token ids (requests sharing leading tokens are adjacent) and by length
    (little padding). For each, a dynamic programme splits the order into runs of at most
    ``max_batch``.
    ``known[i]`` is how many leading tokens of ``seqs[i]`` already have a stored KV cache (default
    none). A run either uses just the stored prefix its requests share, or first extends it to their
    whole shared prefix in a pass of its own; each pass costs ``overhead``. Each order is also
    planned as if the prefix shared by *all* requests were stored, paying once for computing it. The
    cheapest plan wins. Each batch's prefix leaves every request at least one token, whose logits
    are read.
    """
    if not seqs:
        return []
    known = [min(k, len(s) - 1) for k, s in zip(known or [0] * len(seqs), seqs, strict=True)]
    plans = []
    by_ids = sorted(range(len(seqs)), key=lambda i: seqs[i])
    for order in (by_ids, sorted(by_ids, key=lambda i: len(seqs[i]))):
        adjacent = [common_prefix(seqs[a], seqs[b]) for a, b in itertools.pairwise(order)]
        have = [known[k] for k in order]
        plans.append(_plan_order(seqs, order, adjacent, have, max_batch, overhead))
        base = min([*adjacent, *(len(seqs[k]) - 1 for k in order)]) if adjacent else 0
        if base > min(have):  # one pass stores the common prefix, then every batch starts from it
            cost, batches = _plan_order(
                seqs, order, adjacent, [max(base, h) for h in have], max_batch, overhead
            )
            plans.append((cost + base - min(have) + overhead, batches))
    return min(plans, key=lambda plan: plan[0])[1]


def _run_cost(rows: int, longest: int, shared: int, free: int, overhead: int) -> tuple[float, int]:
    """Cost and prefix of one run: its suffixes on top of the free prefix, or a prefix pass first."""
    plain = rows * (longest - free) + overhead
    extended = rows * (longest - shared) + (shared - free) + 2 * overhead
    return (extended, shared) if shared > free and extended < plain else (plain, free)


def _plan_order(
    seqs: Sequence[list[int]],
    order: list[int],
    adjacent: list[int],
    have: list[int],
    max_batch: int,
    overhead: int,
) -> tuple[float, list[Batch]]:
    """Best split of ``order`` into contiguous batches, with its cost in tokens.

    ``adjacent[i]`` is the common prefix of the i-th and next request in ``order``; ``have[i]`` the
    stored prefix of the i-th. The shared prefix of a run is the least common prefix of neighbours
    in it.
    """
    lens = [len(seqs[k]) for k in order]
    best = [0.0] + [float("inf")] * len(order)
    cut, prefix_of = [0] * (len(order) + 1), [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        shared, shortest, longest, free = 1 << 30, 1 << 30, 0, 1 << 30
        for i in range(j - 1, max(-1, j - 1 - max_batch), -1):
            if i < j - 1:
                shared = min(shared, adjacent[i])
            shortest, longest, free = (
                min(shortest, lens[i]),
                max(longest, lens[i]),
                min(free, have[i]),
            )
            top = min(shared, shortest - 1)
            cost, prefix = _run_cost(j - i, longest, top, min(free, top), overhead)
            if best[i] + cost < best[j]:
                best[j], cut[j], prefix_of[j] = best[i] + cost, i, prefix
    batches, j = [], len(order)
    while j > 0:
        batches.append(Batch(order[cut[j] : j], prefix_of[j]))
        j = cut[j]
    return best[-1], batches[::-1]


# --------------------------------------------------------------------------- model side


class PrefixStore:
    """Recently computed prefix KV caches, least recently used evicted first, bounded in bytes."""

    def __init__(self, max_bytes: int = PREFIX_STORE_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], KV] = OrderedDict()

    def _longest(self, tokens: Sequence[int]) -> tuple[int, tuple[int, ...] | None]:
        """The stored key sharing the most leading tokens with ``tokens``, and how many it
        shares.
        """
        tokens = tuple(tokens)
        return max(
            ((common_prefix(key, tokens), key) for key in self._entries),
            default=(0, None),
            key=lambda found: found[0],
        )

    def known(self, tokens: Sequence[int]) -> int:
        """How many leading tokens of ``tokens`` the closest stored entry covers."""
        return self._longest(tokens)[0]

    def closest(self, tokens: Sequence[int]) -> tuple[int, KV | None]:
        """The stored KV sharing the most leading tokens with ``tokens``, cut to that many
        tokens.
        """
        best_n, best_key = self._longest(tokens)
        if best_n == 0 or best_key is None:
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
        return sum(
            t.numel() * t.element_size()
            for kv in self._entries.values()
            for pair in kv
            for t in pair
        )

    def clear(self) -> None:
        """Forget every prefix."""
        self._entries.clear()


class ThreadTuner:
    """Picks the CPU thread count that runs fastest *now*, from the timings of real forward passes.

    torch defaults to one thread per physical core. When other processes keep a core busy, every
    parallel region waits for the thread stuck behind them: on a shared 2-core machine, 2 threads
    ran 5x slower than 1. So each candidate is timed on real batches, in turns, ``trials`` times;
    its cost is the median seconds per unit of work over its last ``window`` batches, so that one
    batch slowed by something else decides nothing. Fewer threads than the default must win by
    ``margin`` to be
    used:
    contention slows the default by far more than that, and batch-to-batch noise by less. Now and
    then another count is tried again, since the load changes.
    """

    def __init__(
        self,
        cores: int,
        explore_every: int = 16,
        trials: int = 3,
        window: int = 5,
        margin: float = 0.15,
    ):
        self.candidates = sorted({cores, max(1, cores // 2), 1}, reverse=True)
        self.explore_every, self.trials, self.margin = explore_every, trials, margin
        self.samples: dict[int, deque[float]] = {c: deque(maxlen=window) for c in self.candidates}
        self._batches = 0
        self._warm = False

    @property
    def cost(self) -> dict[int, float]:
        """Median seconds per unit of work of each thread count timed so far."""
        return {c: statistics.median(s) for c, s in self.samples.items() if s}

    def choose(self) -> int:
        """Thread count for the next batch."""
        short = [c for c in self.candidates if len(self.samples[c]) < self.trials]
        if short:  # in turns, so every count sees the same mix of batches and load
            return min(short, key=lambda c: len(self.samples[c]))
        self._batches += 1
        best = self.best
        assert best is not None
        if self._batches % self.explore_every == 0 and len(self.candidates) > 1:
            others = [c for c in self.candidates if c != best]
            return others[(self._batches // self.explore_every) % len(others)]
        return best

    @property
    def best(self) -> int | None:
        """The thread count to use: the default, unless another is faster by ``margin``."""
        cost = self.cost
        if not cost:
            return None
        fastest = min(cost, key=cost.__getitem__)
        default = self.candidates[0]
        if default in cost and cost[fastest] > (1 - self.margin) * cost[default]:
            return default
        return fastest

    def record(self, threads: int, seconds: float, work: float) -> None:
        """Fold one timed batch (``work``: tokens computed plus the fixed cost of its passes) into
        ``threads``.
        """
        if (
            not self._warm
        ):  # the first batch pays one-time kernel set-up: it would condemn its thread count
            self._warm = True
            return
        self.samples[threads].append(seconds / max(1.0, work))
