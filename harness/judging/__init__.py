"""Prompts and answer parsing for each judging protocol: pointwise, pairwise, critique and revision."""
