"""The surface search (`witune.analysis.surface`) on simulated objectives with a planted truth: no training.

Each simulated run scores the same held-out records: record difficulty shared by every run (it cancels when
runs are paired), the planted curve in wp, and independent noise per record and run."""

from __future__ import annotations

import numpy as np
import pytest

from witune.analysis import surface
from witune.analysis.plw import to_wp
from witune.sweep.config import PLW_PAPER

RECORDS = 60


def objective(curve, noise: float = 0.02, seed: int = 0):
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(2.0, 0.5, RECORDS)

    def evaluate(plw: float) -> surface.Run:
        r = np.random.default_rng([seed, int(plw * 1e6)])
        return surface.Run(plw, tuple(difficulty + curve(float(to_wp(plw))) + r.normal(0, noise, RECORDS)))

    return evaluate


def test_finds_a_planted_interior_optimum_with_fewer_runs_than_the_grid():
    # NLL lowest at wp 0.5, i.e. PLW 0.1 (0.5 ** (1 / 0.30103))
    runs, d = surface.search(objective(lambda wp: 0.4 * (wp - 0.5) ** 2), PLW_PAPER, 0.05, budget_runs=10)
    assert runs[0].plw == 0.05  # the prior always runs first
    assert d.stop == "interval within one grid level", d
    assert surface.grid_level(d.answer, PLW_PAPER) == 0.1
    assert len(runs) < len(PLW_PAPER)
    fit = surface.fit_surface(runs)
    assert fit.ci_low <= 0.1 <= fit.ci_high


def test_stops_on_a_flat_curve_and_keeps_conventional_tuning():
    runs, d = surface.search(objective(lambda wp: 0.0), PLW_PAPER, 0.1, budget_runs=10)
    assert (d.stop, d.answer, len(runs)) == ("flat", 0.0, 3)
    assert "keep conventional tuning" in d.reason


@pytest.mark.parametrize("slope, best", [(0.3, 0.0), (-0.3, 1.0)])
def test_stops_on_a_monotone_curve_at_the_better_end(slope, best):
    runs, d = surface.search(objective(lambda wp: slope * wp), PLW_PAPER, 0.1, budget_runs=10)
    assert (d.stop, d.answer) == ("monotone", best)
    assert len(runs) == 3


def test_never_runs_more_than_the_budget():
    for budget in (0, 1, 2, 3, 4):
        runs, d = surface.search(objective(lambda wp: 0.4 * (wp - 0.6) ** 2, noise=0.2), PLW_PAPER, 0.1, budget)
        assert len(runs) <= budget
        if len(runs) == budget:
            assert d.stop in ("budget spent", "interval within one grid level", "flat", "monotone"), d


def test_noise_widens_the_interval_and_the_search_spends_more():
    quiet = surface.search(objective(lambda wp: 0.4 * (wp - 0.5) ** 2, noise=0.01), PLW_PAPER, 0.1, 10)[0]
    noisy = surface.search(objective(lambda wp: 0.4 * (wp - 0.5) ** 2, noise=0.3), PLW_PAPER, 0.1, 10)[0]
    assert len(noisy) >= len(quiet)


def test_the_proposed_run_narrows_the_interval_more_than_the_vertex_run():
    # the slope at the vertex is measured best from both sides of it: next to the ends, not at the vertex
    evaluate = objective(lambda wp: 0.4 * (wp - 0.5) ** 2)
    runs = [evaluate(p) for p in (0.1, 0.0, 1.0)]
    nxt = surface.propose(surface.fit_surface(runs), runs, [p for p in PLW_PAPER if p not in (0.0, 0.1, 1.0)])

    def width(extra: float) -> float:
        fit = surface.fit_surface([*runs, evaluate(extra)])
        return float(to_wp(fit.ci_high) - to_wp(fit.ci_low))

    assert width(nxt) < width(0.2463)  # wp 0.655, next to the vertex
