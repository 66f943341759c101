"""Local-model machinery shared by the ``transformers`` backend and the student judges.

- :mod:`~harness.local.model_cache`: find a model, convert GGUF files once into a fast-loading
  cache.
- :mod:`~harness.local.loading`: load a causal LM and its tokenizer onto a device.
- :mod:`~harness.local.batching`: batch planning, the prefix KV store and the CPU thread tuner.

Nothing here knows about judges or students; both build on it.
"""
