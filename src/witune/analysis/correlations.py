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

from witune.analysis.results import REQUIRED

LEVELS = ["dataset", "benchmark", "model"]
_PER_RUN = {"weight_distance", "memorization_bleu", "generation_length", "relative", "gain"}


def features_from_results(df: pd.DataFrame) -> pd.DataFrame:
    """Extra numeric columns that are constant within a dataset, benchmark or model, as a long table."""
    rows = []
    for col in df.columns:
        if col in REQUIRED or col in _PER_RUN or not pd.api.types.is_numeric_dtype(df[col]):
            continue
        for level in LEVELS:
            per = df.groupby(level)[col]
            if per.nunique(dropna=True).max() <= 1 and per.first().notna().all():
                rows += [{"level": level, "name": n, "feature": col, "value": float(v)}
                         for n, v in per.first().items()]
                break  # a feature belongs to the coarsest level it is constant in, in LEVELS order
    return pd.DataFrame(rows, columns=["level", "name", "feature", "value"])


def correlate(optima: pd.DataFrame, features: pd.DataFrame, target: str = "prompt_weight") -> pd.DataFrame:
    """Spearman and Kendall correlations of the optimal ``target`` with every feature.

    ``optima`` has one row per combination (see ``witune.analysis.wit.optima``); each combination gets
    the feature value of its dataset / benchmark / model. Features with fewer than 3 combinations or no
    variation are skipped: a rank correlation on them means nothing.
    """
    out = []
    for (level, feature), part in features.groupby(["level", "feature"]):
        values = part.set_index("name")["value"]
        col = optima[level].map(values)
        ok = col.notna() & optima[target].notna()
        x, y = col[ok].to_numpy(float), optima.loc[ok, target].to_numpy(float)
        if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        rho, p_rho = stats.spearmanr(x, y)
        tau, p_tau = stats.kendalltau(x, y)
        out.append({"level": level, "feature": feature, "n": int(len(x)), "spearman": float(rho),
                    "p_spearman": float(p_rho), "kendall_tau": float(tau), "p_kendall": float(p_tau)})
    cols = ["level", "feature", "n", "spearman", "p_spearman", "kendall_tau", "p_kendall"]
    return pd.DataFrame(out, columns=cols)


def mean_optimum_by(optima: pd.DataFrame, target: str = "prompt_weight") -> pd.DataFrame:
    """Average optimal weight per dataset, per benchmark and per model (the paper's 0.17 BBH ... 0.48 IFEval)."""
    parts = [optima.groupby(level)[target].agg(["mean", "count"]).reset_index()
             .rename(columns={level: "name"}).assign(level=level) for level in LEVELS]
    return pd.concat(parts, ignore_index=True)[["level", "name", "mean", "count"]]
