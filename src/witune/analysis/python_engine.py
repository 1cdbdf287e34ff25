"""The Python engine: statsmodels MixedLM for the PLW fit and pygam for the Rg GAM (no R needed).

PLW fit. The paper fits, per training dataset, the glmmTMB model
``score ~ poly(wp, 2) + (0 + poly(wp, 2) | benchmark) + (1 | model)`` with a beta response. Here: a *Gaussian*
linear mixed model (statsmodels ``MixedLM``) on the same min-max scores with the same fixed effects (raw wp and
wp^2) and crossed random effects written as variance components of one all-rows group: a random intercept per
model and random slopes on wp and wp^2 per benchmark. Why not a beta GLMM: statsmodels has none, and min-max
scores are exactly 0 and 1 at each group's extremes, where a beta likelihood is undefined without a squeeze.
The vertex (critical PLW) depends only on the fixed effects, which the Gaussian fit estimates without bias, but
its coefficients live on the min-max scale (e.g. 1.25 / -0.98 where the beta model gives 5.6 / -4.4 on the same
data) and its p-values come from another model: neither is comparable with the paper's Table 3. Variance
components are independent, so unlike the paper the two benchmark slopes are uncorrelated.

Tests: the joint likelihood-ratio test of (wp, wp^2) against ``relative ~ 1`` (ML fits), and the lack-of-fit
test of ``witune.analysis.plw`` (per-run means). Interval: Fieller's (``witune.analysis.plw``); with
``n_boot`` > 0 also a parametric bootstrap from the fitted model (random effects and noise redrawn, refitted).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd

from witune.analysis import gam as gam_view
from witune.analysis.plw import QuadFit, critical_plw, finish, lack_of_fit, lrt_p, plw_datasets

QUADRATIC = "relative ~ wp + I(wp**2)"
WP, WP2 = "wp", "I(wp ** 2)"


def _fit(data: pd.DataFrame, reml: bool, fixed: str = QUADRATIC):
    """Fit the mixed model; drop random effects that have a single level (they are not identifiable)."""
    import statsmodels.formula.api as smf

    vc = {}
    if data["model"].nunique() > 1:
        vc["model"] = "0 + C(model)"
    if data["task"].nunique() > 1:
        vc["slope_wp"] = "0 + C(task):wp"
        vc["slope_wp2"] = "0 + C(task):I(wp**2)"
    if not vc:
        return smf.ols(fixed, data).fit(), "OLS"
    data = data.assign(_all=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # boundary / convergence chatter; a failed fit shows as NaN below
        model = smf.mixedlm(fixed, data, groups="_all", vc_formula=vc, re_formula="0")
        return model.fit(reml=reml, method=["lbfgs", "powell"]), "MixedLM"


def _llf(data: pd.DataFrame, fixed: str) -> float:
    try:
        return float(_fit(data, reml=False, fixed=fixed)[0].llf)
    except (np.linalg.LinAlgError, ValueError):
        return float("nan")


def fit_quadratic(rows: pd.DataFrame, dataset: str, n_boot: int = 0, seed: int = 0, progress=None) -> QuadFit:
    """Fit one dataset's PLW rows (``plw_rows``): estimates, LRT, lack of fit, Fieller interval [, bootstrap]."""
    data = rows[rows["dataset"] == dataset]
    res, method = _fit(data, reml=True)
    b0, b1, b2 = (float(res.params[k]) for k in ["Intercept", WP, WP2])
    cov = res.cov_params()
    tasks = int(data["task"].nunique())
    llf = _llf(data, QUADRATIC)
    fit = QuadFit(
        dataset=dataset,
        n=len(data),
        intercept=b0,
        b1=b1,
        b2=b2,
        p_wp=float(res.pvalues[WP]),
        p_wp2=float(res.pvalues[WP2]),
        p_lrt=lrt_p(llf, _llf(data, "relative ~ 1"), 2),
        critical_plw=critical_plw(b1, b2),
        method=method,
        se_b1=float(res.bse[WP]),
        se_b2=float(res.bse[WP2]),
        cov12=float(cov.loc[WP, WP2]),
        df=float(tasks - 1 if method == "MixedLM" and tasks > 1 else len(data) - 3),
        p_lack_of_fit=lack_of_fit(data),
        n_benchmarks=tasks,
        label=f"statsmodels {method}, Gaussian, identity link (approximation: coefficients and p-values not "
        "comparable with the paper's Table 3)",
    )
    if n_boot > 0:
        fit.boot_low, fit.boot_high = _parametric_bootstrap(data, res, method, n_boot, seed, progress)
        fit.n_boot = n_boot
    return finish(fit)


def _parametric_bootstrap(data, res, method: str, n_boot: int, seed: int, progress) -> tuple[float, float]:
    """2.5 and 97.5 percentiles of the critical PLW refitted on responses simulated from the fitted model."""
    rng = np.random.default_rng(seed)
    mean = res.fittedvalues.to_numpy() if method == "OLS" else (res.model.exog @ res.fe_params.to_numpy())
    scale = float(res.scale)
    vc = dict(zip(res.model.exog_vc.names, np.asarray(res.vcomp))) if method == "MixedLM" else {}
    models = data["model"].astype("category").cat.codes.to_numpy()
    tasks = data["task"].astype("category").cat.codes.to_numpy()
    wp = data["wp"].to_numpy(float)
    values = []
    for _ in range(n_boot):
        y = mean + rng.normal(0, np.sqrt(scale), len(data))
        if "model" in vc:
            y = y + rng.normal(0, np.sqrt(vc["model"]), models.max() + 1)[models]
        if "slope_wp" in vc:
            y = y + rng.normal(0, np.sqrt(vc["slope_wp"]), tasks.max() + 1)[tasks] * wp
            y = y + rng.normal(0, np.sqrt(vc["slope_wp2"]), tasks.max() + 1)[tasks] * wp**2
        try:
            refit, _ = _fit(data.assign(relative=y), reml=True)
            values.append(critical_plw(float(refit.params[WP]), float(refit.params[WP2])))
        except (np.linalg.LinAlgError, ValueError):
            values.append(float("nan"))
        if progress is not None:
            progress()
    arr = np.asarray(values, dtype=float)
    arr = np.where(np.isfinite(arr), arr, 1.0)  # no interior maximum: the curve is best at an end, counted at 1
    lo, hi = np.percentile(arr, [2.5, 97.5])
    return float(lo), float(hi)


def fit_plw(
    rows: pd.DataFrame, n_boot: int = 0, seed: int = 0, progress: Callable[[], None] | None = None
) -> list[QuadFit]:
    """Quadratic fits for every dataset of ``plw_rows`` with at least 3 distinct PLW values."""
    return [fit_quadratic(rows, d, n_boot=n_boot, seed=seed, progress=progress) for d in plw_datasets(rows)]


def fit_gam(rows: pd.DataFrame, n_splines: tuple[int, int] = (6, 5)) -> gam_view.GamResult | None:
    """witune's fit (``witune.analysis.gam``) with pygam: ``LinearGAM(te(wp, Rg) [+ f(model)])`` on per-run
    aggregates, smoothing by GCV; None when the design cannot support it."""
    from pygam import LinearGAM, f, te

    data = gam_view.gam_data(rows)
    if data is None:
        return None
    runs = gam_view.run_means(data)
    model = runs["model"].astype("category").cat.codes.to_numpy()
    x = np.column_stack([runs["wp"].to_numpy(float), runs["rg"].to_numpy(float), model])
    terms = te(0, 1, n_splines=list(n_splines), spline_order=[3, 2])
    label = "pygam LinearGAM(te(wp, Rg)"
    if len(np.unique(model)) > 1:
        terms, label = terms + f(2), label + " + f(model)"
    y = runs["y"].to_numpy(float)
    gam = LinearGAM(terms).gridsearch(x, y, lam=np.logspace(-3, 3, 7), progress=False)
    wp = gam_view.WP_GRID
    rgs = gam_view.rg_grid(data["rg"].unique())
    idx = gam.terms.get_coef_indices(0)
    coef, cov = gam.coef_[idx], gam.statistics_["cov"][np.ix_(idx, idx)]
    df_resid = max(1.0, len(runs) - float(gam.statistics_["edof"]))
    bases = []
    for rg in rgs:
        xx = np.column_stack([wp, np.full_like(wp, rg), np.zeros_like(wp)])
        bases.append(gam._modelmat(xx, term=0).toarray()[:, idx])
    surface, p_raw = gam_view.curves_and_tests(bases, coef, cov, df_resid)
    table = gam_view.summarise(rgs, wp, surface, p_raw, float(np.ptp(data["y"])))
    model_label = label + "), Gaussian, identity link, score scale, one row per run, smoothing by GCV"
    return gam_view.GamResult(table, wp, rgs, surface, len(data), "python", model_label, len(runs))
