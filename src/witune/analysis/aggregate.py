"""Simple and relative aggregates of benchmark scores (PLW paper, section 5.1).

*Simple aggregate*: the unweighted mean of the raw task scores of a configuration (higher-is-better scores
only: averaging an accuracy with a loss would mean nothing; NaN when a configuration has none).
*Relative aggregate*: each score is first min-max normalised within its dataset x benchmark group
(so every task spans [0, 1] whatever its scale), then averaged. The paper analyses only the relative
aggregate because the simple one is dominated by the tasks with the widest score range.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from witune.analysis.results import is_base

# A "task" is one (benchmark, metric) pair. ``summary.analyze`` passes one row per run x benchmark (its
# primary metric, subtasks folded in: ``witune.analysis.benchmarks.one_vote``), so each benchmark counts once.
TASK = ["benchmark", "metric"]
CONFIG = ["model", "dataset", "prompt_weight", "response_weight", "normalization"]


def add_relative(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``relative``: the score min-max normalised within dataset x benchmark x metric, 1 = best.

    Lower-is-better metrics are flipped so that 1 is always the best run. The min and max come from the
    fine-tuned runs only; base-model rows are put on the same scale (they may fall outside [0, 1]) so
    that they never stretch the range the tuned runs are compared on. A group whose scores are all equal
    gets 0.5 (no information, and no division by zero).
    """
    out = df.copy()
    tuned = out[~is_base(out)]
    groups = ["dataset", *TASK]
    lo = tuned.groupby(groups)["score"].min().rename("_lo")
    hi = tuned.groupby(groups)["score"].max().rename("_hi")
    out = out.join(lo, on=groups).join(hi, on=groups)
    span = out["_hi"] - out["_lo"]
    up = (out["score"] - out["_lo"]) / span
    rel = np.where(out["higher_is_better"], up, 1.0 - up)
    out["relative"] = np.where(span > 0, rel, 0.5)
    return out.drop(columns=["_lo", "_hi"])


def aggregates(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (seeds pooled): simple and relative aggregate, and how many scores went in.

    Base-model rows are kept, with NaN weights, as their own configuration per model x dataset.
    """
    data = df if "relative" in df.columns else add_relative(df)
    data = data.assign(_higher=data["score"].where(data["higher_is_better"].astype(bool)))
    grouped = data.groupby(CONFIG, dropna=False)
    out = grouped.agg(
        simple=("_higher", "mean"),
        relative=("relative", "mean"),
        n_scores=("score", "size"),
        n_seeds=("seed", "nunique"),
    ).reset_index()
    return out.sort_values(["model", "dataset", "prompt_weight", "response_weight"]).reset_index(drop=True)


def best_configs(agg: pd.DataFrame) -> pd.DataFrame:
    """The configuration with the highest relative aggregate for each model x dataset (base excluded)."""
    tuned = agg[agg["prompt_weight"].notna()]
    idx = tuned.groupby(["model", "dataset"])["relative"].idxmax()
    return tuned.loc[idx].reset_index(drop=True)
