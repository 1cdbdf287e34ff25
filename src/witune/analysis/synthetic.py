"""Synthetic sweeps with a planted optimum: known answers for the statistics, and demo data.

Each benchmark's score is a concave quadratic in wp = PLW**0.30103 whose vertex sits at the planted
``opt_wp`` for every benchmark (each benchmark scales the curve by its own positive factor, so a
min-max normalisation per benchmark keeps the vertex where it was), plus a random intercept per model,
a random slope scale per benchmark, a quadratic effect of the response weight, Gaussian noise, and optionally
noise shared by all benchmarks of one run (``run_sd``: real sweeps have it, one training run's luck).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from witune.analysis.plw import P  # the PLW paper's exponent: one definition, so planted and fitted wp agree

PAPER_PLWS = [0.0, 5e-4, 2.236e-3, 1e-2, 2.463e-2, 5e-2, 1e-1, 2.463e-1, 5e-1, 1.0]


@dataclass
class SyntheticSweep:
    """Design of a synthetic sweep; ``datasets`` maps a name to its generation ratio Rg."""

    models: list[str] = field(default_factory=lambda: ["llama-a", "llama-b"])
    datasets: dict[str, float] = field(default_factory=lambda: {"short": 0.1})
    benchmarks: list[str] = field(default_factory=lambda: ["arc", "piqa", "wino", "tqa", "ppl"])
    prompt_weights: list[float] = field(default_factory=lambda: list(PAPER_PLWS))
    response_weights: list[float] = field(default_factory=lambda: [1.0])
    opt_wp: float = 0.5  # planted vertex in wp; PLW = opt_wp ** (1 / P)
    opt_wp_per_rg: float = 0.0  # the vertex moves by this much per unit of Rg
    opt_response: float = 0.8  # planted best response weight (matters only with several values)
    noise: float = 0.01
    seeds: int = 1
    steps: int = 40  # training-loss steps per run
    with_base: bool = True
    random_state: int = 0
    no_effect: list[str] = field(default_factory=list)  # datasets where the PLW has no effect at all
    run_sd: float = 0.0  # noise shared by every benchmark of one trained run (its training luck)

    def planted_wp(self, rg: float) -> float:
        return float(np.clip(self.opt_wp + self.opt_wp_per_rg * rg, 0.0, 1.0))


def make_sweep(design: SyntheticSweep | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (results, losses) tables in the schema of ``witune.analysis.results``."""
    d = design or SyntheticSweep()
    rng = np.random.default_rng(d.random_state)
    model_shift = {m: rng.normal(0, 0.05) for m in d.models}
    bench_base = {b: rng.uniform(0.3, 0.7) for b in d.benchmarks}
    bench_scale = {b: rng.uniform(0.5, 1.5) for b in d.benchmarks}
    rows, losses = [], []
    configs = [(lp, lr) for lp in d.prompt_weights for lr in d.response_weights]
    if d.with_base:
        configs.append((np.nan, np.nan))
    for model in d.models:
        for dataset, rg in d.datasets.items():
            wp_star = d.planted_wp(rg)
            amp = 0.2 / (1.0 + rg)  # PLW matters less for long completions, as the PLW paper found
            if dataset in d.no_effect:
                amp = 0.0  # planted "the prompt weight does not matter here"
            for lp, lr in configs:
                for seed in range(d.seeds):
                    run_id = f"{model}|{dataset}|{lp}|{lr}|{seed}"
                    base = np.isnan(lp)
                    wp = 0.0 if base else lp**P
                    run_effect = rng.normal(0, d.run_sd) if d.run_sd > 0 else 0.0
                    for bench in d.benchmarks:
                        effect = -0.5 if base else -((wp - wp_star) ** 2) - 0.3 * (lr - d.opt_response) ** 2
                        value = (
                            bench_base[bench]
                            + model_shift[model]
                            + amp * bench_scale[bench] * effect
                            + run_effect
                            + rng.normal(0, d.noise)
                        )
                        lower = bench == "ppl"  # one lower-is-better metric, to exercise the flip
                        rows.append(
                            {
                                "run_id": run_id,
                                "model": model,
                                "dataset": dataset,
                                "prompt_weight": lp,
                                "response_weight": lr,
                                "normalization": "nonzero",
                                "seed": seed,
                                "benchmark": bench,
                                "metric": "ppl" if lower else "acc",
                                "score": 10.0 - 5 * value if lower else value,
                                "higher_is_better": not lower,
                                "rg": rg,
                                "weight_distance": np.nan if base else 1.0 + abs(wp - wp_star) + rng.normal(0, 0.01),
                                "memorization_bleu": np.nan if base else 80.0 * (1 - 0.5 * wp),
                                "generation_length": np.nan if base else 50.0 + 100.0 * wp,
                            }
                        )
                    if not base:
                        steps = np.arange(1, d.steps + 1)
                        jitter = 0.02 + 0.1 * wp * (1 - wp)  # loss noise peaks at mid PLW
                        loss = 2.0 * np.exp(-steps / 20) + 1.0 + rng.normal(0, jitter, d.steps)
                        losses.append(pd.DataFrame({"run_id": run_id, "step": steps, "loss": loss}))
    return pd.DataFrame(rows), pd.concat(losses, ignore_index=True)


# The PLW paper's Table 3 (AlpacaDataShort): logit-scale fixed effects of the beta GLMM.
PAPER_BETA = {"intercept": -1.043, "wp": 5.590, "wp2": -4.284}


def make_beta_sweep(
    benchmarks: int = 8,
    models: int = 2,
    reps: int = 3,
    phi: float = 40.0,
    slope_sd: float = 0.3,
    model_sd: float = 0.2,
    random_state: int = 0,
) -> pd.DataFrame:
    """Responses drawn from the paper's beta GLMM, ``score ~ wp + wp^2 + (0 + wp + wp^2 | b) + (1 | m)``.

    logit(mu) = -1.043 + (5.590 + u_b) wp + (-4.284 + v_b) wp^2 + a_m, y ~ Beta(mu phi, (1 - mu) phi),
    on the paper's ten PLW levels, ``reps`` draws per cell. Columns: the ``plw_rows`` layout (dataset,
    model, task, plw, wp) plus ``y``, so a fit on ``y`` should recover the planted coefficients.
    """
    rng = np.random.default_rng(random_state)
    u = rng.normal(0, slope_sd, (benchmarks, 2))
    a = rng.normal(0, model_sd, models)
    rows = []
    for m in range(models):
        for b in range(benchmarks):
            for plw in PAPER_PLWS:
                wp = plw**P
                eta = (
                    PAPER_BETA["intercept"]
                    + (PAPER_BETA["wp"] + u[b, 0]) * wp
                    + (PAPER_BETA["wp2"] + u[b, 1]) * wp**2
                    + a[m]
                )
                mu = 1.0 / (1.0 + np.exp(-eta))
                for rep, y in enumerate(rng.beta(mu * phi, (1 - mu) * phi, reps)):
                    rows.append(
                        {
                            "run_id": f"m{m}|{plw}|{rep}",  # one run is scored on every benchmark
                            "dataset": "short",
                            "model": f"m{m}",
                            "task": f"b{b}:acc",
                            "plw": plw,
                            "wp": wp,
                            "y": float(y),
                        }
                    )
    return pd.DataFrame(rows)
