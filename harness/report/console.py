"""Plain-text views of a run for the terminal: the score table and the judge-call accounting."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from harness.analysis.scores import summary

if TYPE_CHECKING:
    from harness.engine.runner import RunResult
    from harness.records import JudgeUsage, RunManifest
    from harness.rundir import RunData


def summary_text(data: RunData) -> str:
    """The run's principle × generator score table, or a line saying nothing was scored."""
    table = summary(data.verdicts, data.constitution, n_boot=500)
    return "no scored verdicts" if table.empty else format_summary(table)


def format_summary(table: pd.DataFrame) -> str:
    """Principle × generator mean scores (with 95 % CI) per judge, as plain text."""
    cells = table.assign(
        cell=[
            f"{m:.2f} [{lo:.2f},{hi:.2f}]" if pd.notna(m) else "-"
            for m, lo, hi in zip(table["mean"], table["ci_low"], table["ci_high"], strict=True)
        ]
    )
    wide = cells.pivot_table(
        index=["judge", "principle"],
        columns="generator",
        values="cell",
        aggfunc="first",
        sort=False,
    )
    return wide.to_string()


def format_accounting(result: RunResult, manifest: RunManifest) -> str:
    """What this invocation did per judge (calls, retries by cause, cache hits, tokens, spend) and
    run spend.
    """
    session = result.session
    if session is None:
        return "\nnothing left to judge: every item already has a verdict in the run folder (0 judge calls)"
    lines = [f"\njudge calls ({session.elapsed_s:.1f}s):"]
    for judge, u in session.judges.items():
        causes = ", ".join(f"{k}: {n}" for k, n in u.retries.items())
        retries = f"{sum(u.retries.values())} ({causes})" if causes else "0"
        spend = (
            f"${u.spend_usd:.4f}" if u.spend_usd is not None else "spend not tracked (no prices)"
        )
        cut = (
            f", concurrency cut to {u.lowest_concurrency} by 429s"
            if _was_cut(manifest, judge, u)
            else ""
        )
        lines.append(
            f"  {judge}: {u.calls} calls for {u.items} items, retries {retries}, cache hits "
            f"{u.cache_hits}, tokens {u.tokens_in:,} in / {u.tokens_out:,} out, {spend}{cut}"
        )
    lines.append(f"  generation: ${session.generation_spend_usd:.4f}")
    total = manifest.spend.total if manifest.spend else session.spend_usd
    lines.append(f"spend: ${session.spend_usd:.4f} this invocation, ${total:.4f} for the whole run")
    return "\n".join(lines)


def _was_cut(manifest: RunManifest, judge: str, usage: JudgeUsage) -> bool:
    """Whether 429s held the judge's concurrency below what its config allows."""
    configured = next(
        (c.get("max_concurrency") for c in manifest.judge_configs if c.get("id") == judge), None
    )
    return (
        isinstance(configured, int)
        and usage.lowest_concurrency is not None
        and usage.lowest_concurrency < configured
    )
