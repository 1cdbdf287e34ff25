"""Surface search over the prompt-loss weight (`witune tune --search surface`): the PLW paper's own response
shape, a quadratic in wp = PLW**0.30103, refitted after every finished run; the next run goes where it narrows
the optimum's interval most; the search stops when the interval rounds to one level of the grid, when the
shape test says flat or monotone, or when the budget is spent.

Scores are held-out response NLL per token (lower is better): one value per held-out record per run, the same
records in the same order for every run. The point's score is the mean over records.

Noise. Each run is one training, so the spread between seeds is not seen unless seeds are given. Two sources
are counted: the held-out records (a bootstrap over records, resampling the same records for every run, so the
runs' shared difficulty cancels as in a paired comparison), and, once there are more runs than the quadratic
has coefficients, the runs' scatter around the fitted curve (training noise and misfit, s^2 (X'X)^-1). The two
are added, which counts the records' noise twice when both are present: conservative, never optimistic.

Why not Optuna's GP sampler for the proposal (ARCHITECTURE.md): the quantity to shrink is the interval of the
vertex of this quadratic, which the papers' fits give a closed form for; a GP's expected improvement targets a
better score, not a narrower interval, has no stopping rule, and would ignore the shape the papers found.
The proposal is a c-optimal design step (the candidate whose added run makes Fieller's interval narrowest at the
current estimate), a few lines of linear algebra.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from witune.analysis.plw import fieller_interval, from_wp, to_wp

ALPHA = 0.05
N_BOOT = 400
# Why the search stopped (or that it goes on); `Decision.reason` says it in words.
STOPS = ("interval within one grid level", "flat", "monotone", "budget spent", "grid exhausted")


@dataclass(frozen=True)
class Run:
    """One finished training: its PLW and each held-out record's response NLL per token."""

    plw: float
    items: tuple[float, ...]

    @property
    def score(self) -> float:
        return float(np.mean(self.items))


@dataclass
class SurfaceFit:
    """The quadratic y = b0 + b1 wp + b2 wp^2 through the runs' mean scores (y: NLL, lower is better)."""

    n_runs: int
    b0: float
    b1: float
    b2: float
    cov: np.ndarray  # 2 x 2 covariance of (b1, b2)
    p_effect: float  # Wald test of b1 = b2 = 0 (no PLW effect)
    q: float  # the two-sided 95% quantile used for the interval
    ci_low: float = math.nan  # Fieller interval of the vertex, as PLW
    ci_high: float = math.nan
    notes: list[str] = field(default_factory=list)

    @property
    def vertex_wp(self) -> float:
        return -self.b1 / (2 * self.b2) if self.b2 != 0 else math.nan

    @property
    def shape(self) -> str:
        """flat, interior optimum, increasing (NLL rises with the PLW: best at 0) or decreasing (best at 1),
        or could not be tested. An interval that runs into exactly one end of [0, 1] reads as monotone."""
        if not math.isfinite(self.p_effect):
            return "could not be tested"
        if self.p_effect >= ALPHA:
            return "flat"
        v = self.vertex_wp
        if self.b2 > 0 and 0 < v < 1:
            at_0 = math.isfinite(self.ci_low) and to_wp(self.ci_low) <= 1e-3
            at_1 = math.isfinite(self.ci_high) and to_wp(self.ci_high) >= 1 - 1e-3
            if at_0 and not at_1:
                return "increasing"
            if at_1 and not at_0:
                return "decreasing"
            return "interior optimum"
        return "increasing" if self.predict(1.0) > self.predict(0.0) else "decreasing"

    @property
    def best_plw(self) -> float:
        """The PLW the fit points to: the vertex, the better end, or 0 (conventional tuning) when flat."""
        s = self.shape
        if s == "interior optimum":
            return float(from_wp(self.vertex_wp))
        if s == "decreasing":
            return 1.0
        return 0.0

    def predict(self, wp: Any) -> Any:
        """The fitted NLL at `wp` (a number or an array)."""
        return self.b0 + self.b1 * wp + self.b2 * wp * wp

    def reading(self) -> str:
        s, p = self.shape, f"p = {self.p_effect:.2g}"
        if s == "flat":
            return f"no PLW effect on held-out response NLL ({p}): keep conventional tuning (PLW 0)"
        if s == "interior optimum":
            return (
                f"held-out response NLL is lowest inside the range ({p}): PLW {self.best_plw:.3g}, 95% interval "
                f"{self.ci_low:.3g} to {self.ci_high:.3g}"
            )
        if s == "could not be tested":
            return "the PLW effect could not be tested (" + "; ".join(self.notes or ["singular fit"]) + ")"
        return (
            f"held-out response NLL {'rises' if s == 'increasing' else 'falls'} with the PLW over the range ({p}): "
            f"best at PLW {self.best_plw:g}"
        )


def _design(wp: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones_like(wp), wp, wp * wp])


def fit_surface(runs: Sequence[Run], n_boot: int = N_BOOT, seed: int = 0) -> SurfaceFit | None:
    """The quadratic through the runs' mean scores; None below 3 distinct PLWs (a quadratic needs 3).

    Runs at the same PLW (seeds) are kept as separate rows: their spread enters the residual term."""
    if len({r.plw for r in runs}) < 3:
        return None
    lengths = {len(r.items) for r in runs}
    if len(lengths) != 1 or lengths.pop() < 2:
        raise ValueError("every run needs the same held-out records (at least 2)")
    wp = np.asarray(to_wp(np.array([r.plw for r in runs], dtype=float)))
    x = _design(wp)
    y_items = np.array([r.items for r in runs], dtype=float)  # runs x records
    y = y_items.mean(axis=1)
    pinv = np.linalg.pinv(x)
    beta = pinv @ y
    rng = np.random.default_rng(seed)
    n_records = y_items.shape[1]
    picks = rng.integers(0, n_records, size=(n_boot, n_records))
    boot = (pinv @ y_items[:, picks].mean(axis=2)).T  # n_boot x 3: the same records resampled for every run
    cov = np.cov(boot[:, 1:].T)
    notes = [f"noise: bootstrap over {n_records} held-out records ({n_boot} replicates)"]
    dof = len(runs) - 3
    q = float(stats.norm.isf(ALPHA / 2))
    if dof > 0:
        s2 = float(np.sum((y - x @ beta) ** 2) / dof)
        cov = cov + s2 * np.linalg.pinv(x.T @ x)[1:, 1:]
        q = float(stats.t.isf(ALPHA / 2, dof))
        notes.append(f"plus the runs' scatter around the curve ({dof} residual df, t reference)")
    else:
        notes.append("3 runs: the curve passes through them, so training noise between runs is not seen")
    b12 = beta[1:]
    try:
        wald = float(b12 @ np.linalg.solve(cov, b12))
        p = float(stats.f.sf(wald / 2, 2, dof) if dof > 0 else stats.chi2.sf(wald, 2))
    except np.linalg.LinAlgError:
        p = math.nan
        notes.append("singular covariance")
    fit = SurfaceFit(len(runs), float(beta[0]), float(beta[1]), float(beta[2]), cov, p, q, notes=notes)
    fit.ci_low, fit.ci_high = _fieller(fit.b1, fit.b2, cov, q)
    return fit


def _fieller(b1: float, b2: float, cov: np.ndarray, q: float) -> tuple[float, float]:
    return fieller_interval(b1, b2, float(cov[0, 0]), float(cov[0, 1]), float(cov[1, 1]), q)


def grid_level(plw: float, grid: Sequence[float]) -> float:
    """The level of `grid` nearest to `plw` on the wp scale (the scale the grid is spread evenly on).

    >>> grid_level(0.2, [0.0, 0.1, 0.25, 0.5, 1.0])
    0.25
    """
    levels = np.asarray(to_wp(np.asarray(grid, dtype=float)))
    return float(grid[int(np.argmin(np.abs(levels - float(to_wp(plw)))))])


@dataclass(frozen=True)
class Decision:
    """What the search does next: run `next_plw`, or stop (`stop` one of STOPS) with `answer`."""

    next_plw: float | None
    stop: str | None
    answer: float | None  # the chosen PLW when stopping
    reason: str


def initial_design(prior: float) -> list[float]:
    """The first runs: the prior (always first), then PLW 0 (conventional tuning, the reference every verdict
    needs) and PLW 1 (the other end). With the prior near wp 0.5 (PLW 0.1) this is the D-optimal design of a
    quadratic on [0, 1]."""
    out: list[float] = []
    for p in (prior, 0.0, 1.0):
        if p not in out:
            out.append(p)
    return out


def decide(runs: Sequence[Run], grid: Sequence[float], prior: float, runs_left: int) -> Decision:
    """The next PLW to run, or why to stop. `runs_left`: how many more runs the budget allows."""
    done = {r.plw for r in runs}
    fit = fit_surface(runs)
    if fit is None:
        todo = [p for p in initial_design(prior) if p not in done]
        if runs_left < 1:
            best = min(runs, key=lambda r: r.score).plw if runs else prior
            return Decision(None, "budget spent", best, "budget spent before a curve could be fitted (3 runs)")
        return Decision(todo[0], None, None, "initial design: the prior, PLW 0 and PLW 1")
    shape = fit.shape
    if shape == "flat":
        return Decision(None, "flat", 0.0, fit.reading())
    if shape in ("increasing", "decreasing"):
        return Decision(None, "monotone", fit.best_plw, fit.reading())
    if shape == "interior optimum":
        lo, hi = grid_level(fit.ci_low, grid), grid_level(fit.ci_high, grid)
        if lo == hi:
            return Decision(None, "interval within one grid level", fit.best_plw, fit.reading())
    if runs_left < 1:
        return Decision(None, "budget spent", _answer(fit, runs), fit.reading())
    candidates = [p for p in grid if p not in done]
    if not candidates:
        return Decision(None, "grid exhausted", _answer(fit, runs), fit.reading())
    nxt = propose(fit, runs, candidates)
    return Decision(nxt, None, None, f"{fit.reading()}; next: the run that narrows that interval most")


def _answer(fit: SurfaceFit, runs: Sequence[Run]) -> float:
    """When the search must stop undecided: the fit's PLW where it has one, else the best run."""
    if fit.shape in ("interior optimum", "increasing", "decreasing", "flat"):
        return fit.best_plw
    return min(runs, key=lambda r: r.score).plw


def propose(fit: SurfaceFit, runs: Sequence[Run], candidates: Sequence[float]) -> float:
    """The candidate PLW whose run would make the vertex's Fieller interval narrowest (on the wp scale) at the
    current estimate: the covariance after one more run is taken as sigma^2 (X'X + x x')^-1, sigma^2 matched to
    the current covariance. Ties go to the candidate nearest the vertex."""
    wp = np.asarray(to_wp(np.array([r.plw for r in runs], dtype=float)))
    xtx = _design(wp).T @ _design(wp)
    base = np.linalg.pinv(xtx)[1:, 1:]
    sigma2 = float(np.trace(fit.cov) / max(np.trace(base), 1e-300))
    vertex = fit.vertex_wp if math.isfinite(fit.vertex_wp) else 0.5

    def width(plw: float) -> tuple[float, float]:
        x = _design(np.array([float(to_wp(plw))]))
        cov = sigma2 * np.linalg.pinv(xtx + x.T @ x)[1:, 1:]
        lo, hi = _fieller(fit.b1, fit.b2, cov, fit.q)
        w = float(to_wp(hi) - to_wp(lo)) if math.isfinite(lo) else 1.0
        return round(w, 9), abs(float(to_wp(plw)) - vertex)

    return min(candidates, key=width)


def search(
    evaluate: Callable[[float], Run], grid: Sequence[float], prior: float, budget_runs: int
) -> tuple[list[Run], Decision]:
    """Run the search: `evaluate(plw)` trains and scores one run (or reads it back on a resumed search: the
    decisions are deterministic, so a rerun asks for the same runs in the same order). Returns the runs and the
    final decision; never more than `budget_runs` runs."""
    runs: list[Run] = []
    while True:
        decision = decide(runs, grid, prior, budget_runs - len(runs))
        if decision.next_plw is None:
            return runs, decision
        runs.append(evaluate(decision.next_plw))
