"""WIT view (WIT paper, Figure 1 and its key observations): gains over conventional tuning on the
(lambda_p, lambda_r) grid, heatmaps with the best cell circled, and where the optima lie.

Relative gain of a configuration on one task = (score - score_IT) / |score_IT|, sign-flipped for
lower-is-better metrics, where IT is conventional instruction tuning (lambda_p, lambda_r) = (0, 1) of
the same model and dataset. A heatmap cell shows the mean gain over the tasks, in percent. The base
model (no tuning) is drawn in the (0, 0) cell, which is what zero weight on every token amounts to.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from witune.analysis.aggregate import TASK
from witune.analysis.results import is_base
from witune.plotting import plot_text

KEY = ["model", "dataset", "normalization"]


def _mean_over_seeds(df: pd.DataFrame) -> pd.DataFrame:
    cols = KEY + TASK + ["prompt_weight", "response_weight"]
    return (
        df.groupby(cols, dropna=False)
        .agg(score=("score", "mean"), higher_is_better=("higher_is_better", "first"))
        .reset_index()
    )


def relative_gains(df: pd.DataFrame) -> pd.DataFrame:
    """Per model x dataset x normalisation x task x configuration: ``gain`` (fraction) over IT (0, 1).

    Groups without an IT run are dropped (there is nothing to compare with). Base-model rows are kept
    with NaN weights; their normalisation is ignored (a base model is not trained) and matched to every
    normalisation of the tuned runs.
    """
    tuned = _mean_over_seeds(df[~is_base(df)])
    base = df[is_base(df)].drop(columns=["normalization"])
    it = tuned[np.isclose(tuned["prompt_weight"], 0) & np.isclose(tuned["response_weight"], 1)]
    it = it[KEY + TASK + ["score"]].rename(columns={"score": "it_score"})
    if len(base):
        norms = tuned[KEY].drop_duplicates()
        base = _mean_over_seeds(base.merge(norms, on=["model", "dataset"]))
        tuned = pd.concat([tuned, base], ignore_index=True)
    out = tuned.merge(it, on=KEY + TASK, how="inner")
    sign = np.where(out["higher_is_better"], 1.0, -1.0)
    denom = out["it_score"].abs().replace(0, np.nan)
    out["gain"] = sign * (out["score"] - out["it_score"]) / denom
    return out


def gain_grid(gains: pd.DataFrame, model: str, dataset: str, normalization: str = "") -> pd.DataFrame:
    """Mean gain (percent) over tasks as a lambda_p (rows) x lambda_r (columns) grid; base in (0, 0)."""
    g = gains[(gains["model"] == model) & (gains["dataset"] == dataset)]
    if normalization:
        g = g[g["normalization"] == normalization]
    g = g.assign(prompt_weight=g["prompt_weight"].fillna(0.0), response_weight=g["response_weight"].fillna(0.0))
    return g.pivot_table(index="prompt_weight", columns="response_weight", values="gain", aggfunc="mean") * 100


def best_cell(grid: pd.DataFrame, exclude_base: bool = True) -> tuple[float, float]:
    """(lambda_p, lambda_r) of the highest cell; the (0, 0) base cell is not a tuning option."""
    values = grid.copy()
    if exclude_base and 0.0 in values.index and 0.0 in values.columns:
        values.loc[0.0, 0.0] = np.nan
    stacked = values.stack().dropna()
    lp, lr = stacked.idxmax()
    return float(lp), float(lr)


def plot_heatmap(ax, grid: pd.DataFrame, title: str, has_base: bool = True) -> tuple[float, float]:
    """Draw one WIT heatmap on ``ax``: diverging colours centred on IT, IT/Base labels, best cell circled."""
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Circle

    values = grid.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    bound = max(float(np.abs(finite).max()) if finite.size else 1.0, 1e-9)
    ax.imshow(values, cmap="RdYlGn", norm=TwoSlopeNorm(0.0, -bound, bound), origin="upper")
    rows, cols = list(grid.index), list(grid.columns)
    for i, lp in enumerate(rows):
        for j, lr in enumerate(cols):
            if not np.isfinite(values[i, j]):
                continue
            label = f"{values[i, j]:+.1f}"
            if np.isclose(lp, 0) and np.isclose(lr, 1):
                label = "IT"
            elif has_base and np.isclose(lp, 0) and np.isclose(lr, 0):
                label = f"Base\n{values[i, j]:+.1f}"
            ax.text(j, i, label, ha="center", va="center", fontsize=7)
    blp, blr = best_cell(grid)
    ax.add_patch(Circle((cols.index(blr), rows.index(blp)), 0.45, fill=False, color="red", lw=2))
    ax.set_xticks(range(len(cols)), [f"{c:g}" for c in cols], fontsize=7)
    ax.set_yticks(range(len(rows)), [f"{r:g}" for r in rows], fontsize=7)
    ax.set_xlabel("response weight λr")
    ax.set_ylabel("prompt weight λp")
    ax.set_title(title, fontsize=9)
    return blp, blr


def heatmap_figure(gains: pd.DataFrame):
    """One heatmap per model x dataset (x normalisation when several), in a grid; returns the figure."""
    import matplotlib.pyplot as plt

    panels = gains[KEY].drop_duplicates().sort_values(KEY).to_numpy().tolist()
    ncols = min(3, len(panels))
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.8 * nrows), squeeze=False)
    multi_norm = gains["normalization"].nunique() > 1
    for ax, (model, dataset, norm) in zip(axes.flat, panels):
        title = plot_text(f"{model} / {dataset}" + (f" / {norm}" if multi_norm else ""))
        grid = gain_grid(gains, model, dataset, norm if multi_norm else "")
        plot_heatmap(ax, grid, title, has_base=bool(gains["prompt_weight"].isna().any()))
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    # Two short lines: a single-panel figure is only ~4 inches wide.
    fig.suptitle("Mean relative gain over conventional\ntuning (0, 1), %; red circle = best", fontsize=10)
    fig.tight_layout()
    return fig


def optima(df: pd.DataFrame) -> pd.DataFrame:
    """The best (lambda_p, lambda_r) per model x dataset x normalisation x task, seeds averaged.

    Ties go to the smaller lambda_p, then the smaller lambda_r (the cheaper change from IT).
    """
    tuned = _mean_over_seeds(df[~is_base(df)])
    tuned["oriented"] = np.where(tuned["higher_is_better"], tuned["score"], -tuned["score"])
    tuned = tuned.sort_values(["prompt_weight", "response_weight"])
    idx = tuned.groupby(KEY + TASK)["oriented"].idxmax()
    return tuned.loc[idx, KEY + TASK + ["prompt_weight", "response_weight", "score"]].reset_index(drop=True)


# The regions of `optimum_counts`: a stable key (what code looks rows up by) -> the display label (the table's
# `region` column). Readers of the table use REGIONS[key], never a copy of the label text.
REGIONS = {
    "prompt_helps": "optimal λp > 0 (prompt loss helps)",
    "prompt_low": "optimal λp in [0, 0.6] (low to moderate)",
    "response_one": "optimal λr = 1",
    "response_high": "optimal λr in [0.4, 1] (moderate to high)",
    "is_it": "optimum is IT (0, 1)",
}


def optimum_counts(opt: pd.DataFrame) -> pd.DataFrame:
    """Shares of combinations whose optimum falls in the regions the WIT paper reports."""
    lp, lr = opt["prompt_weight"], opt["response_weight"]
    checks = {
        REGIONS["prompt_helps"]: lp > 0,
        REGIONS["prompt_low"]: lp <= 0.6 + 1e-9,
        REGIONS["response_one"]: np.isclose(lr, 1.0),
        REGIONS["response_high"]: lr >= 0.4 - 1e-9,
        REGIONS["is_it"]: np.isclose(lp, 0) & np.isclose(lr, 1),
    }
    n = len(opt)
    rows = [
        {"region": k, "count": int(v.sum()), "of": n, "share": float(v.mean()) if n else float("nan")}
        for k, v in checks.items()
    ]
    return pd.DataFrame(rows)
