"""Pairwise analysis: combine the two orders of each comparison, measure position bias, rank
candidates.

Pure functions over the ``pairwise`` table of a run (rows of :class:`harness.records.PairVerdict`). A
pair is named canonically ``(a, b)`` with ``a < b``; ``p_a`` is the probability that ``a`` is the
better response (ties counted half), averaged over the orders that were judged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.records import Constitution

KEYS = ["judge", "principle", "case_id", "a", "b"]


def orient(pairs: pd.DataFrame) -> pd.DataFrame:
    """Scored ordered judgments with canonical names: ``p_a`` and the winning generator (or 'tie')."""
    s = pairs[pairs["status"] == "scored"].copy()
    a_first = s["first"] < s["second"]
    s["a"] = np.where(a_first, s["first"], s["second"])
    s["b"] = np.where(a_first, s["second"], s["first"])
    s["p_a"] = np.where(a_first, s["p_first"], 1 - s["p_first"].astype(float))
    s["a_first"] = a_first
    gen = np.where(
        s["winner"] == "first", s["first"], np.where(s["winner"] == "second", s["second"], "tie")
    )
    s["winner_gen"] = gen
    return s


def combine_orders(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per (judge, principle, case, a, b): mean ``p_a`` over orders, and whether the verdict
    held.

    ``consistent`` is False when the two orders name different winners (the verdict flips with the
    order), True when they agree, and missing when only one order was scored.
    """
    cols = [*KEYS, "p_a", "n_orders", "consistent", "p_a_first_shown", "p_a_second_shown"]
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    s = orient(pairs)
    grouped = s.groupby(KEYS, sort=True)
    out = grouped.agg(p_a=("p_a", "mean"), n_orders=("p_a", "size")).reset_index()
    # Vectorised: the verdict held when every order named the same winner (only defined with two
    # orders).
    same = grouped["winner_gen"].nunique().to_numpy() == 1
    out["consistent"] = (
        pd.Series(same, dtype=object).where(out["n_orders"].to_numpy() > 1, None).to_numpy()
    )
    out["p_a_first_shown"] = (
        _by_order(s, True).reindex(pd.MultiIndex.from_frame(out[KEYS])).to_numpy()
    )
    out["p_a_second_shown"] = (
        _by_order(s, False).reindex(pd.MultiIndex.from_frame(out[KEYS])).to_numpy()
    )
    return out[cols]


def _by_order(s: pd.DataFrame, a_first: bool) -> pd.Series:
    return s[s["a_first"] == a_first].groupby(KEYS)["p_a"].mean()


def position_bias(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per judge: P(prefer the first shown), mean p_first, tie rate and position consistency."""
    s = pairs[pairs["status"] == "scored"]
    if s.empty:
        return pd.DataFrame(
            columns=["judge", "n", "p_prefer_first", "mean_p_first", "tie_rate", "consistency"]
        )
    decided = s[s["winner"] != "tie"]
    rows = []
    combined = combine_orders(pairs)
    for judge, g in s.groupby("judge"):
        d = decided[decided["judge"] == judge]
        both = combined[(combined["judge"] == judge) & combined["consistent"].notna()]
        rows.append(
            {
                "judge": judge,
                "n": len(g),
                "p_prefer_first": float((d["winner"] == "first").mean())
                if len(d)
                else float("nan"),
                "mean_p_first": float(g["p_first"].mean()),
                "tie_rate": float((g["winner"] == "tie").mean()),
                "consistency": float(both["consistent"].astype(bool).mean())
                if len(both)
                else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def soft_wins(combined: pd.DataFrame) -> pd.DataFrame:
    """Per (judge, principle, case, generator): mean probability of beating each opponent."""
    a = combined[["judge", "principle", "case_id", "a", "p_a"]].rename(
        columns={"a": "generator", "p_a": "p_win"}
    )
    b = combined[["judge", "principle", "case_id", "b", "p_a"]].rename(columns={"b": "generator"})
    b = b.assign(p_win=1 - b["p_a"]).drop(columns="p_a")
    both = pd.concat([a, b], ignore_index=True)
    return both.groupby(["judge", "principle", "case_id", "generator"], as_index=False)[
        "p_win"
    ].mean()


def rankings(combined: pd.DataFrame, constitution: Constitution) -> pd.DataFrame:
    """Rank of each candidate per case, per principle and overall (principle weights), per judge.

    The per-principle score is the candidate's mean win probability over its comparisons; the
    overall score weights those by the principles' weights. Rank 1 is best; ties share the better
    rank.
    """
    wins = soft_wins(combined)
    if wins.empty:
        return pd.DataFrame(columns=["judge", "case_id", "generator", "principle", "p_win", "rank"])
    weights = {p.id: p.weight for p in constitution.principles}
    wins["w"] = wins["principle"].map(weights)
    overall = wins.assign(wp=wins["p_win"] * wins["w"]).groupby(
        ["judge", "case_id", "generator"], as_index=False
    )
    overall_df = overall[["wp", "w"]].sum()
    overall_df = overall_df.assign(p_win=overall_df["wp"] / overall_df["w"], principle="overall")
    table = pd.concat(
        [
            wins.drop(columns="w"),
            overall_df[["judge", "case_id", "generator", "p_win", "principle"]],
        ]
    )
    table["p_win"] = table["p_win"].round(9)  # equal win rates must not be split by float noise
    table["rank"] = table.groupby(["judge", "principle", "case_id"])["p_win"].rank(
        ascending=False, method="min"
    )
    return table.sort_values(["judge", "case_id", "principle", "rank"]).reset_index(drop=True)


def prob_better(dist_x: list[float], dist_y: list[float]) -> float:
    """P(X > Y) + P(X = Y) / 2 for independent scores with these distributions over 1..N."""
    x, y = np.asarray(dist_x, float), np.asarray(dist_y, float)
    cdf_y = np.cumsum(y)
    below = np.concatenate([[0.0], cdf_y[:-1]])  # P(Y < k)
    return float(np.sum(x * (below + y / 2)))
