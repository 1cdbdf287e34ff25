"""PLW view (PLW paper, sections 5.2 and 6): quadratic mixed model in wp = PLW**0.30103, critical PLW.

Two engines. ``r`` (``witune.analysis.r_engine``) runs the paper's own beta GLMM in glmmTMB; its
coefficients and p-values are comparable with the paper's Table 3. ``python`` (this module, the default
where R is absent) is a Gaussian *approximation*, described below: it finds the same vertex (critical
PLW), but its coefficients are on the min-max scale rather than the logit scale (e.g. 1.25 / -0.98
where the beta model gives 5.6 / -4.4 on the same data) and its p-values come from another model, so
neither is comparable with Table 3.

Python model choice. The paper fits, per training dataset, the glmmTMB model
``score ~ poly(wp, 2) + (0 + poly(wp, 2) | benchmark) + (1 | model)`` with a beta response.
Here: a *Gaussian* linear mixed model (statsmodels ``MixedLM``) on the same min-max scores with the
same fixed effects (raw wp and wp^2, so the coefficients are directly comparable with the paper's
5.590 and -4.284) and crossed random effects written as variance components of one all-rows group:
a random intercept per model and random slopes on wp and wp^2 per benchmark. Why not a beta GLMM:
statsmodels has none, and min-max scores are exactly 0 and 1 at each group's extremes, where a beta
likelihood is undefined without an ad-hoc squeeze. The critical PLW depends only on the fixed-effect
vertex, which the Gaussian fit estimates without bias; the benchmark-cluster bootstrap below gives
its uncertainty without leaning on the Gaussian assumption. Variance components are independent, so
unlike the paper the two benchmark slopes are uncorrelated (the correlation is rarely identifiable
with a handful of benchmarks anyway).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from witune.analysis.results import is_base

P = 0.30103  # f(0.1) = 0.5: spreads the PLW grid evenly over [0, 1]


def to_wp(plw: np.ndarray | float) -> np.ndarray | float:
    """Power transform of the PLW paper: wp = PLW ** 0.30103."""
    return np.power(plw, P)


def from_wp(wp: np.ndarray | float) -> np.ndarray | float:
    """Inverse of :func:`to_wp`."""
    return np.power(wp, 1.0 / P)


def critical_plw(b1: float, b2: float) -> float:
    """PLW maximising b1*wp + b2*wp^2 on [0, 1]: (-b1 / (2 b2)) ** (1/0.30103), vertex clipped to [0, 1].

    >>> round(critical_plw(5.590, -4.284), 3)
    0.242

    A convex or flat curve (b2 >= 0) has no interior maximum: NaN.
    """
    if not b2 < 0:
        return float("nan")
    return float(from_wp(np.clip(-b1 / (2.0 * b2), 0.0, 1.0)))


def plw_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the PLW design: fine-tuned runs with response weight 1; adds ``plw`` and ``wp``."""
    rows = df[~is_base(df) & np.isclose(df["response_weight"], 1.0)].copy()
    rows["plw"] = rows["prompt_weight"]
    rows["wp"] = to_wp(rows["plw"].to_numpy())
    rows["task"] = rows["benchmark"] + ":" + rows["metric"]
    return rows


@dataclass
class QuadFit:
    """Fixed effects of the quadratic fit for one dataset, their p-values and the critical PLW."""

    dataset: str
    n: int
    intercept: float
    b1: float
    b2: float
    p_wp: float
    p_wp2: float
    p_lrt: float  # likelihood-ratio test of (wp, wp^2) together against no PLW effect
    critical_plw: float
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    n_boot: int = 0
    method: str = "MixedLM"
    note: str = ""
    engine: str = "python"
    se_b1: float = float("nan")
    se_b2: float = float("nan")

    @property
    def model(self) -> str:
        """Engine, model, family and link, as printed next to every number of this fit."""
        if self.engine == "r":
            return f"[r] {self.method}"
        return (
            f"[python] statsmodels {self.method}, Gaussian, identity link (approximation: coefficients "
            "and p-values not comparable with the paper's Table 3)"
        )

    @property
    def significant(self) -> bool:
        return bool(self.p_lrt < 0.05 and self.b2 < 0)


def _fit(data: pd.DataFrame, reml: bool, fixed: str = "relative ~ wp + I(wp**2)"):
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
        warnings.simplefilter("ignore")  # boundary / convergence chatter; a failed fit raises below
        model = smf.mixedlm(fixed, data, groups="_all", vc_formula=vc, re_formula="0")
        return model.fit(reml=reml, method=["lbfgs", "powell"]), "MixedLM"


def fit_quadratic(rows: pd.DataFrame, dataset: str, n_boot: int = 0, seed: int = 0, progress=None) -> QuadFit:
    """Fit one dataset's PLW rows (with a ``relative`` column); optionally a benchmark-cluster bootstrap.

    The bootstrap is two-stage (hierarchical): it resamples whole benchmarks with replacement (a copy
    counts as a new benchmark), then the scored runs within each, refits, and takes the 2.5 and 97.5
    percentiles of the critical PLW. Resampling benchmarks alone ignores the noise within a benchmark
    and gives too narrow an interval with the handful of benchmarks a sweep usually has.
    ``progress`` is called once per bootstrap replicate (for a progress bar).
    """
    data = rows[rows["dataset"] == dataset]
    res, method = _fit(data, reml=True)
    b0, b1, b2 = (float(res.params[k]) for k in ["Intercept", "wp", "I(wp ** 2)"])
    full, _ = _fit(data, reml=False)
    null, _ = _fit(data, reml=False, fixed="relative ~ 1")
    lrt = 2.0 * (full.llf - null.llf)
    fit = QuadFit(
        dataset=dataset,
        n=len(data),
        intercept=b0,
        b1=b1,
        b2=b2,
        p_wp=float(res.pvalues["wp"]),
        p_wp2=float(res.pvalues["I(wp ** 2)"]),
        p_lrt=float(stats.chi2.sf(max(lrt, 0.0), df=2)),
        critical_plw=critical_plw(b1, b2),
        method=method,
        se_b1=float(res.bse["wp"]),
        se_b2=float(res.bse["I(wp ** 2)"]),
    )
    if n_boot > 0:
        fit.ci_low, fit.ci_high, fit.n_boot = *_bootstrap(data, n_boot, seed, progress), n_boot
        if data["task"].nunique() < 5:
            fit.note = "fewer than 5 benchmarks: the bootstrap interval is rough"
    return fit


def _bootstrap(data: pd.DataFrame, n_boot: int, seed: int, progress=None) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    tasks = data["task"].unique()
    by_task = {t: data[data["task"] == t] for t in tasks}
    values = []
    for _ in range(n_boot):
        pick = rng.choice(tasks, size=len(tasks), replace=True)
        parts = []
        for i, t in enumerate(pick):
            part = by_task[t]
            rows = rng.integers(0, len(part), len(part))  # second stage: points within the benchmark
            parts.append(part.iloc[rows].assign(task=f"{t}#{i}"))
        sample = pd.concat(parts, ignore_index=True)
        try:
            res, _ = _fit(sample, reml=True)
            values.append(critical_plw(float(res.params["wp"]), float(res.params["I(wp ** 2)"])))
        except (np.linalg.LinAlgError, ValueError):
            values.append(float("nan"))  # a singular resample: counted as no maximum
        if progress is not None:
            progress()
    arr = np.asarray(values, dtype=float)
    # A replicate without interior maximum (NaN) is kept out; the share is visible via n_boot vs finite.
    arr = arr[np.isfinite(arr)]
    if len(arr) < max(10, n_boot // 2):
        return float("nan"), float("nan")
    lo, hi = np.percentile(arr, [2.5, 97.5])
    return float(lo), float(hi)


def fit_all(
    df_rel: pd.DataFrame, n_boot: int = 0, seed: int = 0, progress=None, engine: str = "python"
) -> list[QuadFit]:
    """Quadratic fits for every dataset that has at least 3 distinct PLW values.

    ``engine`` is ``python`` (Gaussian MixedLM, bootstrap interval) or ``r`` (the paper's beta GLMM,
    delta-method interval; ``n_boot`` is not used).
    """
    rows = plw_rows(df_rel)
    datasets = [d for d in sorted(rows["dataset"].unique()) if rows.loc[rows["dataset"] == d, "plw"].nunique() >= 3]
    if engine == "r":
        from witune.analysis import r_engine

        fits = r_engine.fit_glmms(rows, datasets) if datasets else []
        if progress is not None:  # no bootstrap in the R engine: complete the bar
            for _ in range(n_boot * len(datasets)):
                progress()
        return fits
    return [fit_quadratic(rows, d, n_boot=n_boot, seed=seed, progress=progress) for d in datasets]
