"""Outputs built from a run folder: preference datasets (TRL formats, JSONL and Parquet) with a
dataset card.

Like every stage after judging, these read the run folder only (:func:`harness.rundir.read_run`).
``preferences`` builds and filters the pairs, ``export`` writes the tables, ``card`` writes the
README.
"""
