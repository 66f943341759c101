"""Load a local causal LM and its tokenizer onto a device (torch is imported lazily)."""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.local.model_cache import LoadReport, load_model, resolve_source


@dataclass
class LoadedModel:
    """A causal LM in eval mode on ``device``, its tokenizer, and where its weights came from."""

    model: Any
    tokenizer: Any
    device: str
    report: LoadReport

    @property
    def pad_id(self) -> int:
        """The padding token id (the end-of-sequence token when the tokenizer has no pad token)."""
        tok = self.tokenizer
        return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)


def resolve_device(device: str) -> str:
    """``auto`` becomes cuda when a GPU is visible, else cpu."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "backend 'transformers': device 'cuda' asked for, but torch sees no CUDA GPU"
        )
    return device


def load_causal_lm(
    model: str,
    *,
    gguf_file: str | None = None,
    device: str = "auto",
    dtype: str = "float32",
    threads: int | None = None,
    cache_dir: str | None = None,
    use_cache: bool = True,
) -> LoadedModel:
    """Load ``model`` (GGUF through the converted-model cache unless ``use_cache`` is off).

    ``threads`` sets torch's CPU thread count for the whole process before loading.
    """
    import torch

    map_large_tensors()
    if threads:
        torch.set_num_threads(threads)
    where = resolve_device(device)
    source = resolve_source(model, gguf_file)
    root = Path(cache_dir).expanduser() if cache_dir else None
    try:
        lm, tokenizer, report = load_model(source, getattr(torch, dtype), root, use_cache=use_cache)
    except OSError as exc:
        raise ConfigError(f"backend 'transformers': cannot load model {model!r}: {exc}") from None
    return LoadedModel(lm.to(where), tokenizer, where, report)


@functools.cache
def _libc() -> Any:
    """glibc, when this process runs on it (None elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
MMAP_THRESHOLD = 1 << 20


def map_large_tensors() -> None:
    """Have glibc give every allocation of 1 MiB or more its own mapping (glibc only).

    By default the threshold rises to the largest block freed so far, so after the first batches
    tensors come from the heap, where freed ones stay resident: 660 MB above a 135M model's own
    memory after 400 items, against 250 MB with a fixed threshold. A fixed threshold returns each
    freed tensor to the system at once.
    """
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
