"""Student judges: small reward models distilled from preference labels (human or AI).

- :mod:`~harness.student.features`: frozen features of a local causal LM (loaded by
  :mod:`harness.local`) for (conversation, response) pairs.
- :mod:`~harness.student.data`: preference pairs from files and suites, splits, reward-hacking
  negatives.
- :mod:`~harness.student.train`: Bradley–Terry heads over frozen features, and a LoRA Bradley–Terry
  fine-tune.
- :mod:`~harness.student.evaluate`: held-out accuracy with CIs, performance gap recovered
  (weak-to-strong).
- :mod:`~harness.student.artefact`: the versioned student folder (config, weights, training card).
- :mod:`~harness.student.jobs`: one head's job: train it, measure it on held-out pairs, PGR.
- :mod:`~harness.student.distill`: :func:`~harness.student.distill.distill`, the one train-and-save
  path (``harness distill`` and ``scripts/train_embedded_student.py``).

The ``reward_model`` backend (:mod:`harness.backends.reward_model`) judges with a student.
"""
