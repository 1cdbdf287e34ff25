"""Figures shared by the report and ``witune analyze --plots``: aggregates and the PLW fit."""

from __future__ import annotations

import numpy as np
import pandas as pd

from witune.analysis.plw import P, QuadFit, plw_rows, to_wp
from witune.plotting import plot_text


def aggregate_figure(agg: pd.DataFrame):
    """Simple and relative aggregate against wp, one line per model x dataset (PLW paper Figure 1).

    Uses the configurations with response weight 1; None when there are fewer than 2 such weights.
    """
    import matplotlib.pyplot as plt

    data = agg[np.isclose(agg["response_weight"], 1.0)]
    if data["prompt_weight"].nunique() < 2:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ticks = sorted(data["prompt_weight"].unique())
    for ax, col, title in zip(axes, ["simple", "relative"], ["simple aggregate", "relative aggregate"]):
        for (model, dataset), part in data.groupby(["model", "dataset"]):
            part = part.groupby("prompt_weight")[col].mean()
            ax.plot(
                to_wp(part.index.to_numpy(float)),
                part.to_numpy(),
                marker="o",
                ms=3,
                label=plot_text(f"{model} / {dataset}"),
            )
        ax.set_xticks(to_wp(np.asarray(ticks, float)), [f"{t:g}" for t in ticks], rotation=60, fontsize=6)
        ax.set_xlabel("prompt loss weight (wp = PLW^0.30103 scale)")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def plw_fit_figure(results_rel: pd.DataFrame, fits: list[QuadFit]):
    """Min-max scores against wp per dataset with the fitted fixed-effect parabola and critical PLW."""
    import matplotlib.pyplot as plt

    if not fits:
        return None
    rows = plw_rows(results_rel)
    fig, axes = plt.subplots(1, len(fits), figsize=(4.5 * len(fits), 3.6), squeeze=False)
    grid = np.linspace(0, 1, 101)
    for ax, fit in zip(axes.flat, fits):
        part = rows[rows["dataset"] == fit.dataset]
        for task, t in part.groupby("task"):
            mean = t.groupby("wp")["relative"].mean()
            ax.plot(mean.index, mean.to_numpy(), ".", alpha=0.6, label=plot_text(task))
        eta = fit.intercept + fit.b1 * grid + fit.b2 * grid**2
        # The R engine's coefficients are on the logit scale of the beta GLMM: back to the score scale.
        curve = 1.0 / (1.0 + np.exp(-eta)) if fit.engine == "r" else eta
        ax.plot(grid, curve, "k-", lw=2, label=f"fixed effects [{fit.engine}]")
        if np.isfinite(fit.critical_plw):
            ax.axvline(fit.critical_plw**P, color="red", ls="--", label=f"critical PLW {fit.critical_plw:.3g}")
            if np.isfinite(fit.ci_low):
                ax.axvspan(fit.ci_low**P, fit.ci_high**P, color="red", alpha=0.12)
        ax.set_xlabel("wp = PLW^0.30103")
        ax.set_ylabel("min-max score")
        ax.set_title(f"{plot_text(fit.dataset)} (p = {fit.p_lrt:.2g})", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig
