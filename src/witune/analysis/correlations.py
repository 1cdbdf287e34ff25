"""Correlations between the optimal prompt weight and data set / benchmark / model features
(WIT paper, correlation table): Spearman's rho and Kendall's tau with their p-values.

Features come from two places: numeric columns of the results table that are constant within each
dataset, benchmark or model (``rg`` is the usual one), and an optional long table
``level, name, feature, value`` with level one of dataset / benchmark / model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from witune.results_schema import PER_RUN_DIAGNOSTICS, REQUIRED

LEVELS = ["dataset", "benchmark", "model"]
_PER_RUN = {*PER_RUN_DIAGNOSTICS, "relative", "gain", "n_subtasks", "stderr"}


def features_from_results(df: pd.DataFrame) -> pd.DataFrame:
    """Extra numeric columns that are constant within a dataset, benchmark or model, as a long table."""
    rows = []
    for col in df.columns:
        if col in REQUIRED or col in _PER_RUN or not pd.api.types.is_numeric_dtype(df[col]):
            continue
        for level in LEVELS:
            per = df.groupby(level)[col]
            if per.nunique(dropna=True).max() <= 1 and per.first().notna().all():
                rows += [{"level": level, "name": n, "feature": col, "value": float(v)} for n, v in per.first().items()]
                break  # a feature belongs to the coarsest level it is constant in, in LEVELS order
    return pd.DataFrame(rows, columns=["level", "name", "feature", "value"])


def correlate(optima: pd.DataFrame, features: pd.DataFrame, target: str = "prompt_weight") -> pd.DataFrame:
    """Spearman and Kendall correlations of the optimal ``target`` with every feature.

    ``optima`` has one row per combination (see ``witune.analysis.wit.optima``). A dataset feature has
    one value per dataset, so the combinations of one dataset are not independent observations of it:
    counting them (as this function once did) multiplies n and shrinks the p-values. The optimum is first
    averaged within each dataset (benchmark, model: whatever level the feature belongs to) and the
    correlation runs over those distinct units; ``n`` counts them, ``n_combinations`` the rows averaged.
    Features with fewer than 3 units or no variation are skipped: a rank correlation on them means nothing.
    """
    out = []
    for (level, feature), part in features.groupby(["level", "feature"]):
        values = part.groupby("name")["value"].first()
        have = optima[optima[level].isin(values.index) & optima[target].notna()]
        per_unit = have.groupby(level)[target].agg(["mean", "size"])
        x, y = values.loc[per_unit.index].to_numpy(float), per_unit["mean"].to_numpy(float)
        if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        rho, p_rho = stats.spearmanr(x, y)
        if len(x) <= EXACT_N:
            p_rho = _exact_spearman_p(x, y, float(rho))
        tau, p_tau = stats.kendalltau(x, y)
        out.append(
            {
                "level": level,
                "feature": feature,
                "n": len(x),
                "n_combinations": int(per_unit["size"].sum()),
                "spearman": float(rho),
                "p_spearman": float(p_rho),
                "kendall_tau": float(tau),
                "p_kendall": float(p_tau),
            }
        )
    cols = ["level", "feature", "n", "n_combinations", "spearman", "p_spearman", "kendall_tau", "p_kendall"]
    return pd.DataFrame(out, columns=cols)


EXACT_N = 8  # up to 8! = 40320 orderings: enumerate them


def _exact_spearman_p(x: np.ndarray, y: np.ndarray, rho: float) -> float:
    """Two-sided exact permutation p-value of Spearman's rho for small n.

    scipy's default uses a t approximation that returns p = 0 for a perfect rank correlation whatever n;
    with 3 datasets the truth is 1/3 (2 of the 6 orderings are as extreme).
    """
    import itertools

    rx, ry = stats.rankdata(x), stats.rankdata(y)
    extreme = total = 0
    for perm in itertools.permutations(ry):
        r = np.corrcoef(rx, perm)[0, 1]
        extreme += abs(r) >= abs(rho) - 1e-12
        total += 1
    return extreme / total


def mean_optimum_by(optima: pd.DataFrame, target: str = "prompt_weight") -> pd.DataFrame:
    """Average optimal weight per dataset, per benchmark and per model (the paper's 0.17 BBH ... 0.48 IFEval)."""
    parts = [
        optima.groupby(level)[target]
        .agg(["mean", "count"])
        .reset_index()
        .rename(columns={level: "name"})
        .assign(level=level)
        for level in LEVELS
    ]
    return pd.concat(parts, ignore_index=True)[["level", "name", "mean", "count"]]
