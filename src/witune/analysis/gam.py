"""Optimal PLW per generation ratio Rg from a GAM (PLW paper, section 6, Table 4, Figures 3 and 7).

The paper fits with R's mgcv ``score ~ te(w, r, k=3) + factor(b)`` on the *score scale* (its Figure 7
contour levels are scores, not min-max values), and so do both engines here:

* engine ``r`` (``witune.analysis.r_engine``): exactly that mgcv model (plus ``factor(m)`` when the sweep
  has several models), w the raw PLW.
* engine ``python``: pygam ``LinearGAM(te(wp, Rg) + f(benchmark) [+ f(model)])``, smoothing by GCV. One
  deliberate difference: the smooth runs over wp = PLW**0.30103 instead of the raw PLW, because spline
  knots are spaced evenly along the axis and a typical PLW grid (0, 5e-4, ..., 0.1, ..., 1) puts most of
  its points below 0.1, where raw-PLW knots see one flat segment.

The score is the benchmark's primary score, sign-flipped for lower-is-better metrics so that up is
always better. Min-max scaling within each dataset (what this module did before) stretched pure noise to
[0, 1], so a dataset without any PLW effect got a confident optimum.

Flat flag. For each Rg the optimal PLW maximises the smooth along PLW. The flag is a real test: a Wald
test that the smooth is constant along PLW at that Rg (the contrasts f(w_i, Rg) - mean_i f(w_i, Rg) over
the PLW grid, with the fit's Bayesian covariance, degrees of freedom = their numerical rank). ``flat``
when p >= 0.05: the data cannot tell PLWs apart there, and the advice is to keep the default (PLW 0).
``paper_flat`` is the paper's own descriptive rule (Table 4 asterisk: the max-min of the prediction is
under 5% of the score range), kept for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from witune.analysis.plw import from_wp, to_wp

FLAT = 0.05  # the paper's descriptive threshold (share of the score range)
ALPHA = 0.05  # level of the Wald test behind `flat`


@dataclass
class GamResult:
    """The optimal-PLW-per-Rg table and the smooth on a (PLW, Rg) grid for plotting."""

    table: pd.DataFrame  # rg, optimal_plw, effect_range, p_flat, flat, paper_flat
    wp_grid: np.ndarray  # x axis of `surface`, on the wp scale (both engines)
    rg_grid: np.ndarray
    surface: np.ndarray  # smooth value (score scale), shape (len(rg_grid), len(wp_grid))
    n: int
    engine: str = "python"
    model: str = "pygam LinearGAM(te(wp, Rg) + f(benchmark)), Gaussian, identity link, score scale"


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


def wald_flat(contrast: np.ndarray, coef: np.ndarray, cov: np.ndarray) -> float:
    """p-value of H0 ``contrast @ coef == 0`` (a Wald test on the numerical rank of the contrasts)."""
    d = contrast @ coef
    v = contrast @ cov @ contrast.T
    w, u = np.linalg.eigh((v + v.T) / 2)
    keep = w > max(w.max(), 0.0) * 1e-7
    if not keep.any():
        return 1.0
    z = u[:, keep].T @ d
    stat = float(np.sum(z**2 / w[keep]))
    return float(stats.chi2.sf(stat, df=int(keep.sum())))


def summarise(
    rgs: np.ndarray, wp: np.ndarray, surface: np.ndarray, p_flat: list[float], score_range: float
) -> pd.DataFrame:
    """The Table 4 rows: optimum along PLW at each Rg, its spread, the test and both flags."""
    rows = []
    for rg, effect, p in zip(rgs, surface, p_flat):
        spread = float(np.ptp(effect))
        rows.append(
            {
                "rg": float(rg),
                "optimal_plw": float(from_wp(wp[int(np.argmax(effect))])),
                "effect_range": spread,
                "p_flat": float(p),
                "flat": bool(p >= ALPHA),
                "paper_flat": bool(spread < FLAT * score_range),
            }
        )
    return pd.DataFrame(rows)


def fit_gam(rows: pd.DataFrame, n_splines: tuple[int, int] = (6, 5)) -> GamResult | None:
    """Python engine. ``rows``: ``plw_rows`` of the one-vote results with ``rg``; None when unsupported."""
    from pygam import LinearGAM, f, te

    data = gam_data(rows)
    if data is None:
        return None
    bench = data["task"].astype("category").cat.codes.to_numpy()
    model = data["model"].astype("category").cat.codes.to_numpy()
    x = np.column_stack([data["wp"].to_numpy(float), data["rg"].to_numpy(float), bench, model])
    terms = te(0, 1, n_splines=list(n_splines), spline_order=[3, 2])
    label = "pygam LinearGAM(te(wp, Rg)"
    if len(np.unique(bench)) > 1:
        terms, label = terms + f(2), label + " + f(benchmark)"
    if len(np.unique(model)) > 1:
        terms, label = terms + f(3), label + " + f(model)"
    y = data["y"].to_numpy(float)
    gam = LinearGAM(terms).gridsearch(x, y, lam=np.logspace(-3, 3, 7), progress=False)
    wp = np.linspace(0.0, 1.0, 201)
    rgs = rg_grid(data["rg"].unique())
    idx = gam.terms.get_coef_indices(0)
    coef, cov = gam.coef_[idx], gam.statistics_["cov"][np.ix_(idx, idx)]
    curves, p_flat = [], []  # one smooth curve over wp (and its flatness test) per rg
    for rg in rgs:
        xx = np.column_stack([wp, np.full_like(wp, rg), np.zeros_like(wp), np.zeros_like(wp)])
        basis = gam._modelmat(xx, term=0).toarray()[:, idx]
        curves.append(basis @ coef)
        p_flat.append(wald_flat(basis - basis.mean(axis=0), coef, cov))
    surface = np.asarray(curves)
    table = summarise(rgs, wp, surface, p_flat, float(np.ptp(y)))
    return GamResult(
        table,
        wp,
        rgs,
        surface,
        len(data),
        "python",
        label + "), Gaussian, identity link, score scale, smoothing by GCV",
    )


def gam_figure(res: GamResult):
    """Contour plot of the (PLW, Rg) smooth with the optimal PLW per Rg (the paper's Figure 3)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    cs = ax.contourf(res.wp_grid, res.rg_grid, res.surface, levels=14, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="fitted PLW x Rg effect (score scale)")
    opt = res.table
    ax.plot(to_wp(opt["optimal_plw"].to_numpy()), opt["rg"], "r.-", label="optimal PLW")
    flat = opt[opt["flat"]]
    if len(flat):
        ax.plot(to_wp(flat["optimal_plw"].to_numpy()), flat["rg"], "wx", label="flat (p ≥ 0.05)")
    ticks = [0, 5e-4, 1e-2, 0.05, 0.1, 0.25, 0.5, 1.0]
    ax.set_xticks(to_wp(np.array(ticks)), [f"{t:g}" for t in ticks], fontsize=7)
    ax.set_xlabel("prompt loss weight (wp scale)")
    ax.set_ylabel("generation ratio Rg")
    ax.set_title(f"GAM [{res.engine}]", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
