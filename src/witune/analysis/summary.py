"""Run every analysis of a sweep in one call; the result feeds ``witune analyze`` and ``witune report``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from witune.analysis import correlations, dynamics, gam, plw, stages, wit
from witune.analysis.aggregate import add_relative, aggregates, best_configs
from witune.analysis.results import is_base, run_table


@dataclass
class Analysis:
    """Tables of one sweep's analysis. Views that the sweep's design cannot support are None/empty,
    with the reason in ``notes``."""

    results: pd.DataFrame
    runs: pd.DataFrame
    aggregates: pd.DataFrame
    best: pd.DataFrame
    gains: pd.DataFrame
    optima: pd.DataFrame
    optimum_counts: pd.DataFrame
    fits: list[plw.QuadFit]
    gam: gam.GamResult | None
    correlations: pd.DataFrame
    mean_optima: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    stages: pd.DataFrame | None = None  # gains after SFT and after DPO (sweeps with a DPO stage)
    robustness: pd.DataFrame | None = None  # prompt-robustness diagnostics per configuration


def analyze(df: pd.DataFrame, losses: pd.DataFrame | None = None, features: pd.DataFrame | None = None,
            n_boot: int = 0, seed: int = 0, progress=None) -> Analysis:
    """All views of the issue: aggregates, WIT gains and optima, PLW fits and GAM, correlations, dynamics."""
    notes: list[str] = []
    rel = add_relative(df)
    runs = run_table(rel).merge(rel.groupby("run_id")["relative"].mean().rename("relative_aggregate"),
                                on="run_id")
    runs = dynamics.run_diagnostics(runs, losses)
    gains = wit.relative_gains(rel)
    if gains.empty:
        notes.append("No conventional-tuning run (λp, λr) = (0, 1): relative gains and heatmaps skipped.")
    opt = wit.optima(rel)
    fits = plw.fit_all(rel, n_boot=n_boot, seed=seed, progress=progress)
    if not fits:
        notes.append("Fewer than 3 prompt weights with response weight 1: PLW fit skipped.")
    gam_res = None
    if "rg" in rel.columns:
        gam_res = gam.fit_gam(plw.plw_rows(rel))
    if gam_res is None:
        notes.append("The Rg GAM needs an `rg` column and at least 2 datasets with different Rg.")
    feats = correlations.features_from_results(df)
    if features is not None:
        feats = pd.concat([feats, features], ignore_index=True)
    corr = correlations.correlate(opt, feats)
    return Analysis(results=rel, runs=runs, aggregates=aggregates(rel), best=best_configs(aggregates(rel)),
                    gains=gains, optima=opt, optimum_counts=wit.optimum_counts(opt), fits=fits, gam=gam_res,
                    correlations=corr, mean_optima=correlations.mean_optimum_by(opt), notes=notes,
                    robustness=stages.robustness_table(df))


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return _clean(value.item())
    return value


def _records(df: pd.DataFrame) -> list[dict]:
    return [{k: _clean(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def to_json(a: Analysis) -> dict:
    """A JSON-ready dict of every table (NaN becomes null)."""
    diag_cols = [c for c in ["run_id", "mean_rsd", "weight_distance", "memorization_bleu", "generation_length"]
                 if c in a.runs.columns]
    return {
        "design": design(a),
        "aggregates": _records(a.aggregates),
        "best_configs": _records(a.best),
        "optima": _records(a.optima),
        "optimum_counts": _records(a.optimum_counts),
        "plw_fits": [{k: _clean(v) for k, v in asdict(f).items()} | {"significant": f.significant}
                     for f in a.fits],
        "gam_optimal_plw": _records(a.gam.table) if a.gam is not None else None,
        "correlations": _records(a.correlations),
        "mean_optima": _records(a.mean_optima),
        "diagnostics": _records(a.runs[diag_cols]),
        "notes": a.notes,
        "stage_gains": _records(a.stages) if a.stages is not None else None,
        "robustness": _records(a.robustness) if a.robustness is not None else None,
    }


def design(a: Analysis) -> dict:
    """What the sweep varied: models, datasets, weight grids, normalisations, seeds, benchmarks, runs."""
    r = a.results
    tuned = r[~is_base(r)]
    return {
        "models": sorted(r["model"].unique().tolist()),
        "datasets": sorted(r["dataset"].unique().tolist()),
        "prompt_weights": sorted(float(x) for x in tuned["prompt_weight"].unique()),
        "response_weights": sorted(float(x) for x in tuned["response_weight"].unique()),
        "normalizations": sorted(tuned["normalization"].unique().tolist()),
        "seeds": int(r["seed"].nunique()),
        "tasks": sorted((r["benchmark"] + ":" + r["metric"]).unique().tolist()),
        "runs": int(r["run_id"].nunique()),
        "base_runs": int(r.loc[is_base(r), "run_id"].nunique()),
    }
