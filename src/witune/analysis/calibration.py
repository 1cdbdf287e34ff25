"""Planted-truth simulations of the analysis: how often it names an effect that is not there, and how often it
finds one that is. The tests run them with few replicates (binomial bounds); `bench/simulate_statistics.py`
runs the tables of docs/statistics.md with many.

* Noise guard: `null_grid` is a PLW grid (K prompt weights at response weight 1, (0, 1) among them, 3
  benchmarks) whose true scores are equal everywhere, with an optional planted gain; `guard_rates` counts how
  often the guard names a winner, and how often that winner is the planted one.
* GAM flat test: `gam_null_rows` is a no-effect sweep over 3 datasets (Rg 0.1, 1, 3) with run noise as large
  as the rest; `family_wise_hits` counts sweeps in which any Rg row is called an effect.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from witune.analysis import noise, plw
from witune.analysis.aggregate import add_relative, aggregates, best_configs
from witune.analysis.synthetic import SyntheticSweep, make_sweep

# (benchmark, primary metric, true score, higher is better) of the noise-guard grids; SE of every score.
BENCH = [
    ("arc_challenge", "acc_norm", 0.45, True),
    ("mmlu", "acc", 0.40, True),
    ("heldout", "response_nll", 2.00, False),
]
SE = 0.01
GAM_PLWS = [0.0, 5e-4, 1e-2, 5e-2, 0.1, 0.25, 0.5, 1.0]


def guarded(df: pd.DataFrame, items: pd.DataFrame | None = None) -> pd.Series:
    """The noise guard's verdict on the best configuration of a results table."""
    rel = add_relative(df)
    agg = aggregates(rel)
    return noise.guard(rel, agg, best_configs(agg), items).iloc[0]


def null_grid(rng: np.random.Generator, k: int, seeds: int, effect: float = 0.0, everywhere: bool = False):
    """k prompt weights at response weight 1 ((0, 1) among them), 3 benchmarks, run noise SD = SE; a planted gain
    of ``effect`` standard errors *of the difference of two configuration means* (SE * sqrt(2 / seeds)) for the
    last configuration, on the first benchmark (or on every one)."""
    rows = []
    for i, wp in enumerate(np.linspace(0.0, 1.0, k)):
        for seed in range(seeds):
            for b, (bench, metric, truth, higher) in enumerate(BENCH):
                planted = i == k - 1 and (everywhere or b == 0)
                mu = truth + (effect * SE * math.sqrt(2 / seeds) * (1 if higher else -1) if planted else 0.0)
                rows.append(
                    {
                        "run_id": f"c{i}-s{seed}",
                        "model": "m",
                        "dataset": "d",
                        "prompt_weight": wp,
                        "response_weight": 1.0,
                        "normalization": "",
                        "seed": seed,
                        "benchmark": bench,
                        "metric": metric,
                        "score": mu + rng.normal(0, SE),
                        "higher_is_better": higher,
                    }
                )
    return pd.DataFrame(rows)


def guard_rates(k: int, seeds: int, reps: int, effect: float = 0.0, everywhere: bool = False) -> tuple[float, float]:
    """(share of grids with any winner, share where the winner is the planted configuration)."""
    rng = np.random.default_rng(1000 * k + 10 * seeds + int(effect))
    named = planted = 0
    for _ in range(reps):
        row = guarded(null_grid(rng, k, seeds, effect, everywhere))
        named += bool(row["distinguishable"])
        planted += bool(row["distinguishable"]) and row["prompt_weight"] == 1.0
    return named / reps, planted / reps


def gam_null_rows(seed: int) -> pd.DataFrame:
    """3 datasets (Rg 0.1, 1, 3), 8 PLWs, 2 models, 5 benchmarks; no PLW effect; run noise as large as the rest."""
    design = SyntheticSweep(
        models=["a", "b"],
        datasets={"short": 0.1, "mid": 1.0, "long": 3.0},
        no_effect=["short", "mid", "long"],
        prompt_weights=GAM_PLWS,
        noise=0.01,
        run_sd=0.01,
        with_base=False,
        random_state=seed,
    )
    df, _ = make_sweep(design)
    return plw.plw_rows(add_relative(df))


def family_wise_hits(fit: Callable[[pd.DataFrame], Any], reps: int, first_seed: int = 0) -> int:
    """How many of ``reps`` no-effect sweeps get at least one Rg row that is not flat (and so an optimum); a
    flat row must print no optimum."""
    hits = 0
    for i in range(reps):
        res = fit(gam_null_rows(first_seed + i))
        hits += bool((~res.table["flat"]).any())
        if not res.table.loc[res.table["flat"], "optimal_plw"].isna().all():
            raise AssertionError("a flat Rg row printed an optimum")
    return hits
