"""Figures shared by the report and ``witune analyze --plots``: aggregates and the PLW fit."""

from __future__ import annotations

import numpy as np
import pandas as pd

from witune.analysis.aggregate import TASK
from witune.analysis.plw import P, QuadFit, plw_rows, to_wp
from witune.plotting import plot_text


def aggregate_figure(agg: pd.DataFrame, rel: pd.DataFrame | None = None):
    """Simple and relative aggregate against wp, one line per model x dataset (PLW paper Figure 1), with error
    bars of +-1 SE over seeds where a configuration has >= 2 (``rel``: the per-run scores), else of +-1 SE over
    the test items from the scores' ``stderr`` (one seed: what the evaluation itself says about its noise).

    Uses the configurations with response weight 1; None when there are fewer than 2 such weights. The relative
    aggregate keeps its [0, 1] axis and the simple aggregate's axis spans at least +-3 SE, so a difference within
    noise is never stretched over the whole height of the plot.
    """
    import matplotlib.pyplot as plt

    data = agg[np.isclose(agg["response_weight"], 1.0)]
    if data["prompt_weight"].nunique() < 2:
        return None
    seeds, items = _seed_se(rel), _item_se(rel)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ticks = sorted(data["prompt_weight"].unique())
    bars: set[str] = set()
    for ax, col, title in zip(axes, ["simple", "relative"], ["simple aggregate", "relative aggregate"]):
        half = []
        for (model, dataset), part in data.groupby(["model", "dataset"]):
            mean = part.groupby("prompt_weight")[col].mean()
            err, kind = _error(seeds.get((model, dataset, col)), items.get((model, dataset, col)), mean.index)
            if kind:
                bars.add(kind)
            ax.errorbar(
                to_wp(mean.index.to_numpy(float)),
                mean.to_numpy(),
                yerr=err,
                marker="o",
                ms=3,
                capsize=2,
                label=plot_text(f"{model} / {dataset}"),
            )
            if err is not None and np.isfinite(err).any():
                half.append(3 * float(np.nanmean(err)))
        if col == "relative":
            ax.set_ylim(min(-0.05, ax.get_ylim()[0]), max(1.05, ax.get_ylim()[1]))
        elif half:
            lo, hi = ax.get_ylim()
            centre, need = (lo + hi) / 2, max(half)
            ax.set_ylim(min(lo, centre - need), max(hi, centre + need))
        ax.set_xticks(to_wp(np.asarray(ticks, float)), [f"{t:g}" for t in ticks], rotation=60, fontsize=6)
        ax.set_xlabel("prompt loss weight (wp = PLW^0.30103 scale)")
        ax.set_title(title + _bars_label(bars), fontsize=9)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def _error(seed: pd.Series | None, item: pd.Series | None, index: pd.Index) -> tuple[np.ndarray | None, str]:
    """Per prompt weight: the SE over seeds where there is one, else the SE over test items; and which it is."""
    err, kind = np.full(len(index), np.nan), ""
    for se, name in ((seed, "seeds"), (item, "test items")):
        values = np.full(len(index), np.nan) if se is None else se.reindex(index).to_numpy(float)
        fill = np.isnan(err) & np.isfinite(values)
        if fill.any():
            err[fill], kind = values[fill], kind or name
    return (err, kind) if kind else (None, "")


def _bars_label(kinds: set[str]) -> str:
    if not kinds:
        return " (one seed, no stderr: no error bars)"
    return " (±1 SE over " + " / ".join(sorted(kinds, key=["seeds", "test items"].index)) + ")"


def _item_se(rel: pd.DataFrame | None) -> dict[tuple[str, str, str], pd.Series]:
    """(model, dataset, aggregate) -> SE over the test items of the aggregate, by prompt weight (lambda_r = 1),
    from the scores' ``stderr`` (NaN where one is missing). The aggregate is a mean of its scores, so its SE is
    sqrt(sum of their SE^2) / n; on the relative scale each SE is divided by its benchmark's min-max span (the
    span is taken as fixed), which is exactly how far min-max scaling stretches the noise too."""
    if rel is None or rel.empty or "stderr" not in rel.columns:
        return {}
    tuned = rel[rel["prompt_weight"].notna() & np.isclose(rel["response_weight"], 1.0)]
    every = rel[rel["prompt_weight"].notna()]
    span = every.groupby(["dataset", *TASK])["score"].agg(np.ptp).rename("_span")
    data = tuned.join(span, on=["dataset", *TASK])
    out = {}
    for col in ("simple", "relative"):
        sel = data[data["higher_is_better"].astype(bool)] if col == "simple" else data
        scale = 1.0 if col == "simple" else sel["_span"].where(sel["_span"] > 0)
        per = ((sel["stderr"] / scale) ** 2).groupby([sel["model"], sel["dataset"], sel["prompt_weight"]])
        se = (np.sqrt(per.sum(min_count=1)) / per.size()).where(per.count() == per.size())  # any missing: no bar
        for (model, dataset), part in se.groupby(level=[0, 1]):
            out[(model, dataset, col)] = part.droplevel([0, 1])
    return out


def _seed_se(rel: pd.DataFrame | None) -> dict[tuple[str, str, str], pd.Series]:
    """(model, dataset, aggregate) -> SE over seeds of the per-run aggregate, by prompt weight (lambda_r = 1)."""
    if rel is None or rel.empty:
        return {}
    tuned = rel[rel["prompt_weight"].notna() & np.isclose(rel["response_weight"], 1.0)]
    per_run = tuned.assign(_simple=tuned["score"].where(tuned["higher_is_better"].astype(bool)))
    runs = per_run.groupby(["model", "dataset", "prompt_weight", "run_id"]).agg(
        simple=("_simple", "mean"), relative=("relative", "mean")
    )
    out = {}
    for col in ("simple", "relative"):
        g = runs[col].groupby(level=[0, 1, 2])
        se = (g.std(ddof=1) / np.sqrt(g.size())).where(g.size() >= 2)
        for (model, dataset), part in se.groupby(level=[0, 1]):
            out[(model, dataset, col)] = part.droplevel([0, 1])
    return out


def plw_fit_figure(results_rel: pd.DataFrame, fits: list[QuadFit]):
    """Min-max scores against wp per dataset with the fitted fixed-effect curve, its 95% band (the PLW effect
    relative to PLW 0, from the fixed effects' covariance) and the critical PLW with its interval where the fit
    has an interior optimum."""
    import matplotlib.pyplot as plt

    if not fits:
        return None
    rows = plw_rows(results_rel)
    fig, axes = plt.subplots(1, len(fits), figsize=(4.5 * len(fits), 3.6), squeeze=False)
    grid = np.linspace(0, 1, 101)
    for ax, fit in zip(axes.flat, fits):
        part = rows[rows["dataset"] == fit.dataset]
        for task, t in part.groupby("task"):
            g = t.groupby("wp")["relative"]
            err = (g.std(ddof=1) / np.sqrt(g.size())).where(g.size() >= 2)
            ax.errorbar(
                g.mean().index,
                g.mean().to_numpy(),
                yerr=err.to_numpy(),
                fmt=".",
                alpha=0.6,
                capsize=2,
                label=plot_text(task),
            )
        effect = fit.b1 * grid + fit.b2 * grid**2
        sd = np.sqrt(np.maximum(grid**2 * fit.se_b1**2 + 2 * grid**3 * fit.cov12 + grid**4 * fit.se_b2**2, 0.0))
        link = _inverse_link(fit)
        ax.plot(grid, link(fit.intercept + effect), "k-", lw=2, label=f"fixed effects [{fit.engine}]")
        if np.isfinite(sd).all():
            ax.fill_between(
                grid,
                link(fit.intercept + effect - 1.96 * sd),
                link(fit.intercept + effect + 1.96 * sd),
                color="k",
                alpha=0.12,
                label="95% band (effect vs PLW 0)",
            )
        if fit.shape == "interior optimum":
            ax.axvline(fit.critical_plw**P, color="red", ls="--", label=f"critical PLW {fit.critical_plw:.3g}")
            if np.isfinite(fit.ci_low):
                ax.axvspan(fit.ci_low**P, fit.ci_high**P, color="red", alpha=0.12)
        ax.set_ylim(-0.05, 1.05)  # the min-max scale: never stretched to the data's own spread
        ax.set_xlabel("wp = PLW^0.30103")
        ax.set_ylabel("min-max score")
        ax.set_title(plot_text(f"{fit.dataset}: {fit.shape} (p = {fit.p_lrt:.2g})"), fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def _inverse_link(fit: QuadFit):
    # A logit-link fit (the beta GLMM) has its coefficients on the logit scale: back to the score scale.
    if fit.link == "logit":
        return lambda eta: 1.0 / (1.0 + np.exp(-eta))
    return lambda eta: eta
