"""Run every analysis of a sweep in one call; the result feeds ``witune analyze`` and ``witune report``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from witune.analysis import benchmarks, correlations, dynamics, engines, gam, noise, plw, stages, wit
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
    subtasks: pd.DataFrame | None = None  # every score row with its benchmark group (drill-down)
    diagnostics: pd.DataFrame | None = None  # diagnostic rows (never in any aggregate), one column each
    roles: pd.DataFrame | None = None  # which (benchmark, metric) are scores / diagnostics, and why
    primary: dict[str, str] = field(default_factory=dict)  # the metric each benchmark votes with
    engine: str = "python"
    stages: pd.DataFrame | None = None  # gains after SFT and after DPO (sweeps with a DPO stage)
    robustness: pd.DataFrame | None = None  # prompt-robustness diagnostics per configuration

    @property
    def models_used(self) -> list[dict]:
        """Which engine and model fitted what: printed by the CLI, the JSON and the report."""
        out = [
            {
                "analysis": "relative aggregate, WIT gains, optima",
                "model": "no model: one primary score per benchmark, min-max within dataset x benchmark",
            },
            {
                "analysis": "best configuration vs (0, 1) (noise guard)",
                "model": "raw-score difference per benchmark / SE: >= 2 seeds: pooled seed spread, t with its df, "
                "Bonferroni over configurations x benchmarks; 1 seed: test items (paired where given), no training claim",
            },
        ]
        for f in self.fits:
            out.append({"analysis": f"PLW quadratic fit ({f.dataset})", "model": f.model})
        if self.gam is not None:
            out.append({"analysis": "optimal PLW per Rg", "model": f"[{self.gam.engine}] {self.gam.model}"})
        return out


Progress = Callable[[str, int, int], None]  # (stage, done, total): the CLI draws it as a bar


def analyze(
    df: pd.DataFrame,
    losses: pd.DataFrame | None = None,
    features: pd.DataFrame | None = None,
    n_boot: int = 0,
    seed: int = 0,
    progress: Progress | None = None,
    engine: str = "python",
    primary: dict[str, str] | None = None,
    dpo: pd.DataFrame | None = None,
    groups: dict[str, str] | None = None,
    items: pd.DataFrame | None = None,
    r_timeout: float | None = None,
) -> Analysis:
    """All views of the issue: aggregates, WIT gains and optima, PLW fits and GAM, correlations, dynamics.

    Diagnostics (``benchmarks.ROLES``) are split off first and never reach an aggregate, gain, optimum or
    model; lm-eval subtasks are folded into one row per run x benchmark on its primary metric
    (``benchmarks.PRIMARY``, overridable with ``primary``; ``groups`` maps a task to its benchmark where the
    results do not say). ``engine``: ``python``, ``r`` or ``auto``; ``items``: per-item scores (``run_id,
    benchmark, metric, item, score``) for the noise guard's paired comparison. Every step is linear in the rows.
    ``dpo``: the results of the DPO stage a sweep chained after SFT (gains after both, ``stages``).
    """
    notes: list[str] = []
    stage = _stages(progress)
    stage("choosing the engine")
    eng = engines.resolve_engine(engine, r_timeout)
    stage("folding subtasks into benchmarks")
    scores, diag = benchmarks.split_roles(df)
    roles = benchmarks.role_table(df)
    if scores.empty:
        raise RuntimeError("the results hold no scores, only diagnostics: nothing to compare configurations on")
    bench, subtasks, fold_notes = benchmarks.fold(scores, primary, groups)
    notes += fold_notes
    chosen = benchmarks.choose_primary(bench.assign(group=bench["benchmark"]), primary)
    stage("aggregates")
    rel = add_relative(bench)
    runs = run_table(rel).merge(rel.groupby("run_id")["relative"].mean().rename("relative_aggregate"), on="run_id")
    runs = dynamics.run_diagnostics(runs, losses)
    diag_wide = benchmarks.diagnostics_wide(diag)
    if len(diag_wide.columns) > 1:
        runs = runs.merge(diag_wide, on="run_id", how="left")
    gains = wit.relative_gains(rel)
    if gains.empty:
        notes.append("No conventional-tuning run (λp, λr) = (0, 1): relative gains and heatmaps skipped.")
    opt = wit.optima(rel)
    rows = plw.plw_rows(rel)
    if rel.loc[~is_base(rel), "response_weight"].nunique() > 1 and len(rows):
        notes.append(
            "WIT grid: the PLW fit and the GAM use only the λr = 1 rows (the PLW design; elsewhere PLW is not λp)."
        )
    n_fits = len(plw.plw_datasets(rows))
    done = [0]

    def tick() -> None:
        done[0] += 1
        stage(f"PLW fit [{eng.name}]", done[0], n_fits * (1 + n_boot))

    stage(f"PLW fit [{eng.name}]", 0, n_fits * (1 + n_boot))
    fits = eng.fit_plw(rows, n_boot=n_boot, seed=seed, progress=tick)
    if eng.name == "python":  # the Python engine has no per-fit ticks for the fit itself
        stage(f"PLW fit [{eng.name}]", n_fits * (1 + n_boot), n_fits * (1 + n_boot))
    if not fits:
        notes.append("Fewer than 3 prompt weights with response weight 1: PLW fit skipped.")
    gam_res, gam_note = _fit_gam(eng, rel, rows, stage)
    if gam_note:
        notes.append(gam_note)
    stage("correlations and the noise guard")
    feats = correlations.features_from_results(bench)
    if features is not None:
        feats = pd.concat([feats, features], ignore_index=True)
    corr = correlations.correlate(opt, feats)
    agg = aggregates(rel)
    # The best configuration's lead over (0, 1) on raw scores against their standard errors (noise.RULE)
    best = noise.guard(rel, agg, best_configs(agg), items)
    return Analysis(
        results=rel,
        runs=runs,
        aggregates=agg,
        best=best,
        gains=gains,
        optima=opt,
        optimum_counts=wit.optimum_counts(opt),
        fits=fits,
        gam=gam_res,
        correlations=corr,
        mean_optima=correlations.mean_optimum_by(opt),
        notes=notes,
        subtasks=subtasks,
        diagnostics=diag_wide,
        roles=roles,
        primary=chosen,
        engine=eng.name,
        stages=stages.stage_gains(df, dpo) if dpo is not None else None,
        robustness=stages.robustness_table(df),
    )


def _fit_gam(
    eng: engines.Engine, rel: pd.DataFrame, rows: pd.DataFrame, stage: Callable[..., None]
) -> tuple[gam.GamResult | None, str]:
    """The Rg GAM and the note that says which engine fitted it, or plainly why it was not fitted."""
    if "rg" not in rel.columns:
        return None, "The Rg GAM was not fitted: the results have no `rg` column (one generation ratio per dataset)."
    n_rg = int(rows["rg"].nunique())
    fitter, note = eng, ""
    if n_rg < eng.min_rg_levels:
        fallback = engines.python_engine()
        if eng.name == fallback.name or n_rg < fallback.min_rg_levels:
            # no engine can fit it: say so, never name an engine that "fitted" nothing
            return None, (
                f"The Rg GAM was not fitted: it needs at least {fallback.min_rg_levels} distinct Rg "
                f"(datasets with different generation ratios); the sweep has {n_rg}."
            )
        fitter = fallback
        note = (
            f"The {eng.name} engine's GAM needs at least {eng.min_rg_levels} distinct Rg (the sweep has {n_rg}), "
            "so the GAM was fitted with the Python engine (pygam) instead."
        )
    stage(f"GAM [{fitter.name}]")
    res = fitter.fit_gam(rows)
    if res is None:
        return None, (
            "The Rg GAM was not fitted: it needs at least 3 prompt weights with response weight 1 and 2 distinct Rg."
        )
    return res, note


def _stages(progress: Progress | None) -> Callable[..., None]:
    def stage(name: str, done: int = 0, total: int = 1) -> None:
        if progress is not None:
            progress(name, done, max(total, 1))

    return stage


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
    diag_cols = ["run_id"] + diagnostic_columns(a)
    return {
        "engine": a.engine,
        "models_used": a.models_used,
        "design": design(a),
        "primary_metrics": a.primary,
        "roles": _records(a.roles) if a.roles is not None else [],
        "aggregates": _records(a.aggregates),
        "best_configs": _records(a.best),
        "optima": _records(a.optima),
        "optimum_counts": _records(a.optimum_counts),
        "plw_fits": [
            {k: _clean(v) for k, v in asdict(f).items()}
            | {"shape": f.shape, "best_plw": _clean(f.best_plw), "reading": f.reading(), "model": f.model}
            for f in a.fits
        ],
        "gam_model": f"[{a.gam.engine}] {a.gam.model}" if a.gam is not None else None,
        "gam_optimal_plw": _records(a.gam.table) if a.gam is not None else None,
        "correlations": _records(a.correlations),
        "mean_optima": _records(a.mean_optima),
        "diagnostics": _records(a.runs[diag_cols]),
        "notes": a.notes,
        "stage_gains": _records(a.stages) if a.stages is not None else None,
        "robustness": _records(a.robustness) if a.robustness is not None else None,
    }


def diagnostic_columns(a: Analysis) -> list[str]:
    """Per-run diagnostic columns of ``a.runs``: the sweep's diagnostic columns, loss RSD, diagnostic rows."""
    fixed = list(dynamics.DIAGNOSTICS)
    extra = [] if a.diagnostics is None else [c for c in a.diagnostics.columns if c != "run_id"]
    return [c for c in fixed + extra if c in a.runs.columns and a.runs[c].notna().any()]


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
        "benchmarks": sorted((r["benchmark"] + ":" + r["metric"]).unique().tolist()),
        "runs": int(r["run_id"].nunique()),
        "base_runs": int(r.loc[is_base(r), "run_id"].nunique()),
    }
