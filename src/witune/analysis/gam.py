"""Optimal PLW per generation ratio Rg from a GAM (PLW paper, section 6 and Table 4).

The paper fits with R's mgcv ``score ~ te(w, r, k=3) + factor(b)``. Here pygam
``LinearGAM(te(wp, Rg) + f(benchmark))`` on the min-max scores, smoothing parameter by GCV. One
deliberate difference: the smooth runs over wp = PLW**0.30103 instead of the raw PLW. Spline knots
are spaced evenly along the axis, and a typical PLW grid (0, 5e-4, ..., 0.1, ..., 1) puts most of its
points below 0.1, where raw-PLW knots would see one flat segment; in wp the points are spread evenly.
For each Rg on a grid, the optimal PLW maximises the (PLW, Rg) smooth; as in the paper's Table 4, an
optimum is flagged ``flat`` when the smooth varies by less than 5% of the score range at that Rg.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from witune.analysis.plw import from_wp, to_wp

FLAT = 0.05


@dataclass
class GamResult:
    """The fitted GAM, the optimal-PLW-per-Rg table, and the smooth on a (wp, Rg) grid for plotting."""

    table: pd.DataFrame          # rg, optimal_plw, effect_range, flat
    wp_grid: np.ndarray
    rg_grid: np.ndarray
    surface: np.ndarray          # smooth value, shape (len(rg_grid), len(wp_grid))
    n: int


def rg_grid(observed: np.ndarray, n: int = 10) -> np.ndarray:
    """Evenly spaced Rg values over the observed range, plus the observed values themselves."""
    lo, hi = float(np.min(observed)), float(np.max(observed))
    grid = np.round(np.linspace(lo, hi, n), 3)
    return np.unique(np.concatenate([grid, np.round(observed, 3)]))


def fit_gam(rows: pd.DataFrame, n_splines: tuple[int, int] = (6, 5)) -> GamResult | None:
    """Fit on PLW rows (``plw_rows`` plus ``relative`` and ``rg``); None with fewer than 2 distinct Rg."""
    from pygam import LinearGAM, f, te

    data = rows.dropna(subset=["rg", "relative"])
    if data["rg"].nunique() < 2 or data["plw"].nunique() < 3:
        return None
    codes = data["task"].astype("category").cat.codes.to_numpy()
    x = np.column_stack([data["wp"].to_numpy(float), data["rg"].to_numpy(float), codes])
    terms = te(0, 1, n_splines=list(n_splines), spline_order=[3, 2])
    if len(np.unique(codes)) > 1:
        terms = terms + f(2)
    gam = LinearGAM(terms).gridsearch(x, data["relative"].to_numpy(float), lam=np.logspace(-3, 3, 7),
                                      progress=False)
    wp = np.linspace(0.0, 1.0, 201)
    rgs = rg_grid(data["rg"].unique())
    score_range = float(np.ptp(data["relative"]))
    surface, rows_out = [], []
    for rg in rgs:
        xx = np.column_stack([wp, np.full_like(wp, rg), np.zeros_like(wp)])
        effect = gam.partial_dependence(term=0, X=xx)
        surface.append(effect)
        spread = float(np.ptp(effect))
        rows_out.append({"rg": float(rg), "optimal_plw": float(from_wp(wp[int(np.argmax(effect))])),
                         "effect_range": spread, "flat": spread < FLAT * score_range})
    return GamResult(pd.DataFrame(rows_out), wp, rgs, np.asarray(surface), len(data))


def gam_figure(res: GamResult):
    """Contour plot of the (PLW, Rg) smooth with the optimal PLW per Rg (the paper's Figure 3)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    cs = ax.contourf(res.wp_grid, res.rg_grid, res.surface, levels=14, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="fitted effect on min-max score")
    opt = res.table
    ax.plot(to_wp(opt["optimal_plw"].to_numpy()), opt["rg"], "r.-", label="optimal PLW")
    ticks = [0, 5e-4, 1e-2, 0.05, 0.1, 0.25, 0.5, 1.0]
    ax.set_xticks(to_wp(np.array(ticks)), [f"{t:g}" for t in ticks], fontsize=7)
    ax.set_xlabel("prompt loss weight (wp scale)")
    ax.set_ylabel("generation ratio Rg")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
