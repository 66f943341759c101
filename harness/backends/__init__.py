"""Judge backends: the OpenAI-compatible API, local transformers models, rules and student reward
models.
"""
