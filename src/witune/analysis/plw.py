"""PLW view (PLW paper, sections 5.2 and 6): quadratic mixed model in wp = PLW**0.30103, and what it says.

This module holds what both engines share (``witune.analysis.engines``): the power transform, the rows of the
PLW design, the fit's result (``QuadFit``), how a fit is *read* (its shape, the PLW it recommends) and the
interval of the critical PLW. It imports no engine; each engine imports it.

Reading a fit. A quadratic in wp over [0, 1] has one of these shapes, and only the first has a "critical PLW":

* ``interior optimum``: b2 < 0 with the vertex -b1 / (2 b2) inside (0, 1): the paper's case;
* ``increasing`` / ``decreasing``: the fitted curve is best at PLW 1 / PLW 0, or its vertex's interval runs
  into that end of [0, 1] (a strong effect that rises with PLW is an effect, not "no effect");
* ``U-shaped``: b2 > 0 with the minimum inside (0, 1): best at one end, worst in between;
* ``flat``: the joint test of (wp, wp^2) finds no PLW effect (p >= 0.05);
* ``could not be tested``: the test or the standard errors are NaN (a failed fit), never read as "no effect";
* ``poor fit``: the lack-of-fit test (the quadratic against one mean per PLW level) rejects the quadratic, so
  its vertex is not read.

Interval of the critical PLW: Fieller's interval, the set of vertices v that a Wald test of
b1 + 2 v b2 = 0 does not reject, on a t reference with the fit's degrees of freedom (the number of benchmarks
minus one when the benchmark slopes are random, the residual degrees of freedom otherwise). Unlike the delta
method it stays honest where b2 is weakly determined (the interval widens to the edge of [0, 1] instead of
pretending to be symmetric), and the t reference accounts for the few benchmarks a random slope is estimated
from; its coverage on data simulated from the paper's own model is tested (``tests/test_analysis_intervals.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from witune.analysis.results import is_base

P = 0.30103  # f(0.1) = 0.5: spreads the PLW grid evenly over [0, 1]
ALPHA = 0.05
SHAPES = ("interior optimum", "increasing", "decreasing", "U-shaped", "flat", "could not be tested", "poor fit")
FIELLER = "Fieller (Wald test inversion, t reference)"
_EDGE = 1e-3  # an interval end this close (in wp) to 0 or 1 reaches that end


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
    """Rows of the PLW design: fine-tuned runs with response weight 1; adds ``plw``, ``wp`` and ``task``.

    On a WIT grid (several response weights) only the lambda_r = 1 rows are the PLW design: the others do not
    have PLW = lambda_p. ``relative`` is recomputed as the min-max score *within these rows* (dataset x
    benchmark), as the paper normalises its PLW design; a min-max over the whole grid would squeeze the PLW
    rows into part of [0, 1].
    """
    rows = df[~is_base(df) & np.isclose(df["response_weight"], 1.0)].copy()
    rows["plw"] = rows["prompt_weight"]
    rows["wp"] = to_wp(rows["plw"].to_numpy(float))
    rows["task"] = rows["benchmark"] + ":" + rows["metric"]
    if len(rows):
        y = np.where(rows["higher_is_better"].astype(bool), rows["score"], -rows["score"]).astype(float)
        g = rows.assign(_y=y).groupby(["dataset", "task"])["_y"]
        lo, hi = g.transform("min"), g.transform("max")
        span = (hi - lo).to_numpy()
        rows["relative"] = np.where(span > 0, (y - lo.to_numpy()) / np.where(span > 0, span, 1.0), 0.5)
    return rows


def plw_datasets(rows: pd.DataFrame) -> list[str]:
    """Datasets of ``plw_rows`` with at least 3 distinct PLW values (a quadratic needs 3)."""
    return [d for d in sorted(rows["dataset"].unique()) if rows.loc[rows["dataset"] == d, "plw"].nunique() >= 3]


@dataclass
class QuadFit:
    """Fixed effects of the quadratic fit for one dataset, their tests, the shape and the critical PLW."""

    dataset: str
    n: int
    intercept: float
    b1: float
    b2: float
    p_wp: float
    p_wp2: float
    p_lrt: float  # likelihood-ratio test of (wp, wp^2) together against no PLW effect; NaN: not tested
    critical_plw: float  # the vertex as PLW when b2 < 0 (NaN otherwise); read only when `shape` is interior
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    interval: str = ""  # how (ci_low, ci_high) was computed
    method: str = "MixedLM"  # the model, with its formula
    engine: str = "python"
    se_b1: float = float("nan")
    se_b2: float = float("nan")
    cov12: float = float("nan")
    df: float = float("nan")  # degrees of freedom of the t reference of the interval
    p_lack_of_fit: float = float("nan")  # quadratic vs one mean per PLW level (``lack_of_fit``); NaN: not tested
    n_benchmarks: int = 0
    notes: list[str] = field(default_factory=list)  # every caveat of the fit, printed by the CLI and the report
    boot_low: float = float("nan")  # parametric bootstrap percentile interval (only with n_boot > 0)
    boot_high: float = float("nan")
    n_boot: int = 0
    link: str = "identity"  # of the fixed effects: "identity" (min-max scale) or "logit" (beta GLMM)
    label: str = ""  # the engine's full description (family, link, caveats); `method` when empty

    @property
    def note(self) -> str:
        return "; ".join(self.notes)

    @property
    def model(self) -> str:
        """Engine, model, family and link, as printed next to every number of this fit."""
        return f"[{self.engine}] {self.label or self.method}"

    @property
    def testable(self) -> bool:
        values = [self.p_lrt, self.b1, self.b2, self.se_b1, self.se_b2]
        return all(math.isfinite(v) for v in values)

    @property
    def shape(self) -> str:
        """One of ``SHAPES``: what the fit says about the PLW (module docstring)."""
        if not self.testable:
            return "could not be tested"
        if self.p_lrt >= ALPHA:
            return "flat"
        if math.isfinite(self.p_lack_of_fit) and self.p_lack_of_fit < ALPHA:
            return "poor fit"
        vertex = -self.b1 / (2 * self.b2) if self.b2 != 0 else math.nan
        inside = math.isfinite(vertex) and 0.0 < vertex < 1.0
        if inside and self.b2 < 0:
            # A vertex whose interval runs into exactly one end of [0, 1] is not evidence that the curve comes
            # down again: the data say "best towards that end", i.e. monotone.
            at_0, at_1 = self.ci_low <= from_wp(_EDGE), self.ci_high >= from_wp(1 - _EDGE)
            if at_1 and not at_0:
                return "increasing"
            if at_0 and not at_1:
                return "decreasing"
            return "interior optimum"
        if inside and self.b2 > 0:
            return "U-shaped"
        return "increasing" if self.b1 + self.b2 > 0 else "decreasing"

    @property
    def significant(self) -> bool:
        """A PLW effect was found (any shape but flat, untestable or poor fit)."""
        return self.shape in ("interior optimum", "increasing", "decreasing", "U-shaped")

    @property
    def best_plw(self) -> float:
        """The PLW the fit recommends: the vertex, or the better end of [0, 1]; NaN where it says nothing."""
        s = self.shape
        if s == "interior optimum":
            return self.critical_plw
        if s in ("increasing", "decreasing"):
            return 1.0 if s == "increasing" else 0.0
        if s == "U-shaped":
            return 1.0 if self.b1 + self.b2 > 0 else 0.0
        return float("nan")

    def summary(self) -> dict[str, object]:
        """The fit as one table row (CLI and report): estimates, tests (NaN as "not tested"), shape, interval."""

        def num(x: float) -> float | str:
            return x if math.isfinite(x) else "not tested"

        row: dict[str, object] = {
            "dataset": self.dataset,
            "engine": self.engine,
            "n": self.n,
            "wp": self.b1,
            "se(wp)": num(self.se_b1),
            "wp^2": self.b2,
            "se(wp^2)": num(self.se_b2),
            "p(LRT)": num(self.p_lrt),
            "p(lack of fit)": num(self.p_lack_of_fit),
            "shape": self.shape,
            "best PLW": self.best_plw if math.isfinite(self.best_plw) else "-",
            "95% interval": f"{self.ci_low:.3g}-{self.ci_high:.3g}" if math.isfinite(self.ci_low) else "-",
            "interval method": self.interval or "-",
        }
        if self.n_boot:
            row["parametric bootstrap"] = f"{self.boot_low:.3g}-{self.boot_high:.3g} ({self.n_boot})"
        return row

    def reading(self) -> str:
        """One sentence: the shape, its test and the PLW it points to (shared by the CLI, report, recommend)."""
        s, p = self.shape, f"p = {self.p_lrt:.2g}"
        if s == "could not be tested":
            return f"the PLW effect could not be tested ({self.note or 'the fit gave no usable test'})"
        if s == "flat":
            return f"no PLW effect found ({p}): the fitted curve is flat within noise"
        if s == "poor fit":
            return (
                f"a PLW effect ({p}), but the quadratic does not fit (lack of fit p = {self.p_lack_of_fit:.2g}): "
                "its vertex is not read"
            )
        if s == "interior optimum":
            ci = f", 95% interval {self.ci_low:.3g} to {self.ci_high:.3g}" if math.isfinite(self.ci_low) else ""
            return f"the scores peak inside the range ({p}): critical PLW {self.critical_plw:.3g}{ci}"
        if s == "U-shaped":
            return f"the scores dip in the middle ({p}): best at PLW {self.best_plw:g} of the two ends"
        rising = s == "increasing"
        return (
            f"the scores {'rise' if rising else 'fall'} with the PLW over the whole range ({p}): "
            f"best at PLW {self.best_plw:g}"
        )


def t_quantile(df: float, level: float = 0.95) -> float:
    """Two-sided ``level`` quantile of t with ``df`` degrees of freedom (normal when df is unknown or huge)."""
    if not math.isfinite(df) or df <= 0:
        return float(stats.norm.isf((1 - level) / 2))
    return float(stats.t.isf((1 - level) / 2, df))


def fieller_interval(b1: float, b2: float, v11: float, v12: float, v22: float, q: float) -> tuple[float, float]:
    """Fieller's interval of the vertex -b1 / (2 b2), within [0, 1] on the wp scale, returned as PLW.

    The vertices v in [0, 1] where |b1 + 2 v b2| <= q * sd(b1 + 2 v b2): a Wald test of "the slope is zero at
    v" does not reject. Evaluated on a fine grid, so an unbounded set (b2 weakly determined) becomes the part of
    [0, 1] it covers; NaN when the covariance is unusable or no v qualifies.

    >>> lo, hi = fieller_interval(5.59, -4.284, 0.04, 0.0, 0.04, 1.96)
    >>> round(float(to_wp(lo)), 2), round(float(to_wp(hi)), 2)
    (0.58, 0.73)
    """
    if not all(math.isfinite(x) for x in (b1, b2, v11, v12, v22, q)):
        return float("nan"), float("nan")
    v = np.linspace(0.0, 1.0, 4001)
    slope = b1 + 2 * v * b2
    var = v11 + 4 * v * v12 + 4 * v**2 * v22
    keep = slope**2 <= q**2 * np.maximum(var, 0.0)
    if not keep.any():
        return float("nan"), float("nan")
    return float(from_wp(v[keep].min())), float(from_wp(v[keep].max()))


def finish(fit: QuadFit) -> QuadFit:
    """Fieller interval and the notes every engine adds in the same way (NaN standard errors, few benchmarks)."""
    if fit.b2 < 0:
        q = t_quantile(fit.df)
        fit.ci_low, fit.ci_high = fieller_interval(fit.b1, fit.b2, fit.se_b1**2, fit.cov12, fit.se_b2**2, q)
        df = f"{fit.df:g} df" if math.isfinite(fit.df) else "normal"
        fit.interval = f"{FIELLER}, {df}"
    if not (math.isfinite(fit.se_b1) and math.isfinite(fit.se_b2)):
        fit.notes.append("standard errors are NaN (singular fit): the PLW effect could not be tested")
    elif not math.isfinite(fit.p_lrt):
        fit.notes.append("the likelihood-ratio test failed (a fit did not converge): could not be tested")
    if fit.shape == "poor fit":
        fit.notes.append(f"lack of fit p = {fit.p_lack_of_fit:.2g}: the quadratic misses the PLW means")
    if 0 < fit.n_benchmarks < 3:
        fit.notes.append(f"only {fit.n_benchmarks} benchmark(s): the benchmark slopes are not random effects")
    return fit


def lack_of_fit(data: pd.DataFrame) -> float:
    """p-value of the quadratic's lack of fit, on per-run means (one dataset's ``plw_rows``).

    Each run's mean min-max score is regressed on model + wp + wp^2 and on model + one mean per PLW level; the
    F test compares the two against the spread of runs at the same PLW (pure error, from seeds and models).
    Per-run means because a run's benchmarks share its training noise: a test on run x benchmark rows would
    call that noise lack of fit. NaN without replicated runs or with 3 PLW levels or fewer.
    """
    if "run_id" not in data.columns or "relative" not in data.columns:
        return float("nan")
    runs = data.groupby(["run_id", "model", "plw", "wp"], as_index=False)["relative"].mean()
    levels = runs["plw"].nunique()
    if levels <= 3:
        return float("nan")
    models = pd.get_dummies(runs["model"], drop_first=True, dtype=float).to_numpy()
    one = np.ones((len(runs), 1))
    wp = runs["wp"].to_numpy(float)[:, None]
    quad = np.hstack([one, models, wp, wp**2])
    full = np.hstack([models, pd.get_dummies(runs["plw"], dtype=float).to_numpy()])
    y = runs["relative"].to_numpy(float)

    def rss(x: np.ndarray) -> tuple[float, int]:
        beta, *_ = np.linalg.lstsq(x, y, rcond=None)
        return float(np.sum((y - x @ beta) ** 2)), int(np.linalg.matrix_rank(x))

    (rq, kq), (rf, kf) = rss(quad), rss(full)
    df_num, df_den = kf - kq, len(y) - kf
    if df_num <= 0 or df_den <= 0 or rf <= 0:
        return float("nan")
    return float(stats.f.sf(((rq - rf) / df_num) / (rf / df_den), df_num, df_den))


def lrt_p(llf_full: float, llf_null: float, df: int) -> float:
    """p-value of a likelihood-ratio test; NaN when either log-likelihood is missing (never read as 0 or 1)."""
    stat = 2.0 * (llf_full - llf_null)
    if not math.isfinite(stat) or df <= 0:
        return float("nan")
    return float(stats.chi2.sf(max(stat, 0.0), df=df))
