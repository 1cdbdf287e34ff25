"""Optimal PLW per generation ratio Rg from a GAM (PLW paper, section 6, Table 4, Figures 3 and 7): what both
engines share. The fits themselves live in the engines (``witune.analysis.engines``).

Two fits, and which is which:

* **witune's fit** (both engines): a tensor smooth of (wp, Rg), wp = PLW**0.30103, on *per-run aggregates*:
  each run's oriented scores (lower-is-better metrics sign-flipped) minus each benchmark's mean, averaged over
  the run's benchmarks. One row per trained run, because the benchmarks of one run share its training noise: a
  fit on run x benchmark rows treats them as independent and finds effects in pure noise. In a balanced design
  this is the same smooth as the paper's ``+ factor(b)`` model, with errors that are independent. The smooth
  runs over wp because spline knots are spaced evenly along the axis and a typical PLW grid (0, 5e-4, ...,
  0.1, ..., 1) puts most of its points below 0.1, where raw-PLW knots see one flat segment. Its optimum is
  ``optimal_plw``; the flat test below uses it.
* **the paper's model** (R engine only): mgcv ``score ~ te(w, r, k=3) + factor(b)`` on run x benchmark rows, w
  the raw PLW, as printed in the paper. Kept as the reference (``paper_optimal_plw``): on the paper's PLW grid
  its raw-PLW knots cannot place a peak near 0.2.

Flat test. At each Rg row a Wald test that the smooth is constant along PLW (the contrasts f(w_i, Rg) -
mean_i f(w_i, Rg) over the PLW grid, the fit's Bayesian covariance, rank = numerical rank of the contrasts),
on an F reference with the fit's residual degrees of freedom. The rows are tested together, so the p-values
are Holm-adjusted across the rows (``p_flat``; unadjusted ``p_flat_raw``): the chance that *any* row of a
no-effect data set is called an effect is at most 5%. ``flat`` when p_flat >= 0.05: the data cannot tell PLWs
apart there, and a flat row has no optimum (NaN). ``paper_flat`` is the paper's descriptive rule (Table 4
asterisk: the max-min of the prediction under 5% of the score range), kept for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from witune.analysis.plw import from_wp, to_wp
from witune.plotting import plot_text

FLAT = 0.05  # the paper's descriptive threshold (share of the score range)
ALPHA = 0.05  # family-wise level of the flat test over the Rg rows
WP_GRID = np.linspace(0.0, 1.0, 201)


@dataclass
class GamResult:
    """The optimal-PLW-per-Rg table and witune's smooth on a (PLW, Rg) grid for plotting."""

    table: pd.DataFrame  # rg, optimal_plw, [paper_optimal_plw], effect_range, p_flat_raw, p_flat, flat, paper_flat
    wp_grid: np.ndarray  # x axis of `surface`, on the wp scale
    rg_grid: np.ndarray
    surface: np.ndarray  # witune's smooth (score scale), shape (len(rg_grid), len(wp_grid))
    n: int  # run x benchmark rows
    engine: str = "python"
    model: str = ""
    n_runs: int = 0  # rows of the per-run fit


def rg_grid(observed: np.ndarray, n: int = 10) -> np.ndarray:
    """Evenly spaced Rg values over the observed range, plus the observed values themselves."""
    lo, hi = float(np.min(observed)), float(np.max(observed))
    grid = np.round(np.linspace(lo, hi, n), 3)
    return np.unique(np.concatenate([grid, np.round(observed, 3)]))


def oriented(rows: pd.DataFrame) -> np.ndarray:
    """The raw score with lower-is-better metrics sign-flipped: up is better, the scale is kept."""
    return np.where(rows["higher_is_better"].astype(bool), rows["score"], -rows["score"]).astype(float)


def gam_data(rows: pd.DataFrame) -> pd.DataFrame | None:
    """PLW rows with an Rg and the oriented score ``y``; None when the design cannot support a GAM."""
    data = rows.dropna(subset=["rg", "score"]).copy()
    if data.empty or data["rg"].nunique() < 2 or data["plw"].nunique() < 3:
        return None
    data["y"] = oriented(data)
    return data


def run_means(data: pd.DataFrame) -> pd.DataFrame:
    """One row per run: wp, plw, rg, model and ``y`` = mean over its benchmarks of (y - that benchmark's mean)."""
    centred = data["y"] - data.groupby("task")["y"].transform("mean")
    keys = ["run_id", "model", "dataset", "plw", "wp", "rg"]
    return data.assign(y=centred).groupby(keys, sort=True, as_index=False)["y"].mean()


def wald_flat(contrast: np.ndarray, coef: np.ndarray, cov: np.ndarray, df_resid: float = np.inf) -> float:
    """p-value of H0 ``contrast @ coef == 0``: Wald statistic on the numerical rank of the contrasts, on an F
    reference with ``df_resid`` residual degrees of freedom (chi-square when infinite)."""
    d = contrast @ coef
    v = contrast @ cov @ contrast.T
    w, u = np.linalg.eigh((v + v.T) / 2)
    keep = w > max(w.max(), 0.0) * 1e-7
    if not keep.any():
        return 1.0
    z = u[:, keep].T @ d
    stat, rank = float(np.sum(z**2 / w[keep])), int(keep.sum())
    if np.isfinite(df_resid) and df_resid > 0:
        return float(stats.f.sf(stat / rank, rank, df_resid))
    return float(stats.chi2.sf(stat, df=rank))


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment: family-wise error control over all the p-values given.

    >>> holm(np.array([0.01, 0.04, 0.03])).round(2).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p, dtype=float)
    order = np.argsort(p)
    m = len(p)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def curves_and_tests(
    bases: list[np.ndarray], coef: np.ndarray, cov: np.ndarray, df_resid: float
) -> tuple[np.ndarray, list[float]]:
    """The smooth along wp at each Rg (``bases[i] @ coef``) and its unadjusted flat-test p-value."""
    curves = np.asarray([b @ coef for b in bases])
    p = [wald_flat(b - b.mean(axis=0), coef, cov, df_resid) for b in bases]
    return curves, p


def summarise(
    rgs: np.ndarray,
    wp: np.ndarray,
    surface: np.ndarray,
    p_raw: list[float],
    score_range: float,
    paper_surface: np.ndarray | None = None,
) -> pd.DataFrame:
    """The Table 4 rows: optimum along PLW at each Rg (NaN where flat), its spread, the tests and both flags."""
    p_adj = holm(np.asarray(p_raw))
    rows = []
    for i, (rg, effect) in enumerate(zip(rgs, surface)):
        flat = bool(p_adj[i] >= ALPHA)
        row = {
            "rg": float(rg),
            "optimal_plw": float("nan") if flat else float(from_wp(wp[int(np.argmax(effect))])),
        }
        if paper_surface is not None:
            paper = paper_surface[i]
            row["paper_optimal_plw"] = float("nan") if flat else float(from_wp(wp[int(np.argmax(paper))]))
        row |= {
            "effect_range": float(np.ptp(effect)),
            "p_flat_raw": float(p_raw[i]),
            "p_flat": float(p_adj[i]),
            "flat": flat,
            "paper_flat": bool(np.ptp(effect if paper_surface is None else paper_surface[i]) < FLAT * score_range),
        }
        rows.append(row)
    return pd.DataFrame(rows)


def gam_figure(res: GamResult):
    """Contour plot of witune's (PLW, Rg) smooth with the optimal PLW per Rg (the paper's Figure 3).

    Flat rows (no detectable PLW effect) have no optimum and get no marker.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    cs = ax.contourf(res.wp_grid, res.rg_grid, res.surface, levels=14, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="fitted PLW x Rg effect (score scale, per-run mean)")
    opt = res.table.dropna(subset=["optimal_plw"])
    if len(opt):
        ax.plot(to_wp(opt["optimal_plw"].to_numpy()), opt["rg"], "r.-", label="optimal PLW (wp-scale fit)")
    if "paper_optimal_plw" in res.table:
        paper = res.table.dropna(subset=["paper_optimal_plw"])
        if len(paper):
            ax.plot(to_wp(paper["paper_optimal_plw"].to_numpy()), paper["rg"], "w+--", label="paper's model")
    flat = res.table[res.table["flat"]]
    if len(flat):
        ax.plot(np.full(len(flat), 0.02), flat["rg"], "wx", label="flat (Holm p ≥ 0.05): no optimum")
    ticks = [0, 5e-4, 1e-2, 0.05, 0.1, 0.25, 0.5, 1.0]
    ax.set_xticks(to_wp(np.array(ticks)), [f"{t:g}" for t in ticks], fontsize=7)
    ax.set_xlabel("prompt loss weight (wp scale)")
    ax.set_ylabel("generation ratio Rg")
    ax.set_title(plot_text(f"GAM [{res.engine}]"), fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
