"""Intervals of the critical PLW that cover, on simulated data with a planted vertex (issue 19).

Coverage is a rate: a run of n replicates is checked against the binomial, at the 1% level, for a true
coverage of at least 90% (the goal is 95% +- 5). The fast test checks Fieller's interval itself on an ordinary
regression whose curvature is weakly determined (where the delta method undercovers); the slow tests run both
engines on their own models.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from witune.analysis import plw, python_engine, r_engine
from witune.analysis.synthetic import PAPER_BETA, PAPER_PLWS, SyntheticSweep, make_beta_sweep, make_sweep

HAVE_R, WHY_NOT_R = r_engine.r_status()
needs_r = pytest.mark.skipif(not HAVE_R, reason=f"R engine unavailable: {WHY_NOT_R}")


def lowest_acceptable(n: int, coverage: float = 0.90, level: float = 0.01) -> int:
    """Fewest covering replicates out of n that a true coverage of ``coverage`` gives with probability 1 - level."""
    return int(binom.ppf(level, n, coverage))


def _delta(b1, b2, v11, v12, v22, q) -> tuple[float, float]:
    grad = np.array([-1 / (2 * b2), b1 / (2 * b2**2)])
    se = float(np.sqrt(grad @ np.array([[v11, v12], [v12, v22]]) @ grad))
    v = -b1 / (2 * b2)
    return v - q * se, v + q * se


def test_fieller_covers_where_the_delta_method_does_not():
    import statsmodels.api as sm

    rng = np.random.default_rng(0)
    wp = np.repeat(plw.to_wp(np.array(PAPER_PLWS)), 2)
    x = sm.add_constant(np.column_stack([wp, wp**2]))
    b1, b2 = 1.0, -0.8  # vertex wp 0.625, curvature only ~3 SE from zero at this noise
    truth = plw.from_wp(-b1 / (2 * b2))
    n, fieller, delta, widths = 300, 0, 0, []
    for _ in range(n):
        y = x @ np.array([0.0, b1, b2]) + rng.normal(0, 0.12, len(wp))
        res = sm.OLS(y, x).fit()
        c, v = res.params, res.cov_params()
        q = plw.t_quantile(res.df_resid)
        lo, hi = plw.fieller_interval(c[1], c[2], v[1, 1], v[1, 2], v[2, 2], q)
        fieller += lo <= truth <= hi
        widths.append(plw.to_wp(hi) - plw.to_wp(lo))
        if c[2] < 0:
            dlo, dhi = _delta(c[1], c[2], v[1, 1], v[1, 2], v[2, 2], q)
            delta += dlo <= -b1 / (2 * b2) <= dhi
    assert fieller >= lowest_acceptable(n) and fieller / n <= 1.0
    assert delta < fieller  # the symmetric interval misses where the curvature is weakly determined
    assert np.median(widths) < 0.6  # and Fieller's is not trivially the whole range


@needs_r
@pytest.mark.slow
def test_r_engine_interval_covers_the_papers_vertex():
    # 40 data sets drawn from the paper's own beta GLMM (5 benchmarks, 2 models), fitted in one Rscript run.
    n = 40
    rows = pd.concat(
        [make_beta_sweep(benchmarks=5, random_state=i).assign(dataset=f"r{i:02d}") for i in range(n)],
        ignore_index=True,
    )
    fits = r_engine.fit_plw(rows, response="y", timeout=3000)
    truth = plw.critical_plw(PAPER_BETA["wp"], PAPER_BETA["wp2"])
    usable = [f for f in fits if math.isfinite(f.ci_low)]
    covered = sum(f.ci_low <= truth <= f.ci_high for f in usable)
    print(f"R engine: Fieller covers {covered}/{len(usable)} ({len(fits) - len(usable)} fits without interval)")
    assert len(usable) >= 0.8 * n
    assert covered >= lowest_acceptable(len(usable))
    assert all("Fieller" in f.interval and f.df == 4 for f in usable if "| b)" in f.method)


@pytest.mark.slow
def test_python_engine_interval_covers_the_planted_vertex():
    n = 30
    truth = plw.from_wp(0.5)
    covered = 0
    for i in range(n):
        df, _ = make_sweep(SyntheticSweep(noise=0.02, random_state=100 + i, with_base=False))
        from witune.analysis.aggregate import add_relative

        fit = python_engine.fit_plw(plw.plw_rows(add_relative(df)))[0]
        covered += fit.ci_low <= truth <= fit.ci_high
    print(f"Python engine: Fieller covers {covered}/{n}")
    assert covered >= lowest_acceptable(n)
