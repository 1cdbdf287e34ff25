"""The user's own optimum from a sweep (`witune recommend --from SWEEP`): the PLW fit of one dataset and, on a WIT
grid, its best (lambda_p, lambda_r) cell. Lives in the analysis (it fits); `witune.stats.recommend` only
consumes the resulting `SweepOptimum`."""

from __future__ import annotations

import pandas as pd

from witune.analysis import aggregate, benchmarks, engines, noise
from witune.analysis import plw as plw_view
from witune.errors import ConfigError
from witune.stats.recommend import SweepOptimum


def sweep_optimum(
    df: pd.DataFrame, dataset: str | None = None, n_boot: int = 200, seed: int = 0, path: str = "<results>"
) -> SweepOptimum:
    """Fit the user's sweep results (the checked table of a sweep folder or results CSV) and return one dataset's
    optimum, for `witune recommend --from SWEEP`.

    ``dataset`` picks the sweep dataset (by its label: the file stem); None works when the sweep has one.
    ``path`` names the sweep in error messages.
    """
    names = sorted(df["dataset"].dropna().unique())
    if dataset is None:
        if len(names) != 1:
            raise ConfigError(f"{path}: the sweep has datasets {names}; name one with --sweep-dataset")
        dataset = names[0]
    if dataset not in names:
        raise ConfigError(f"{path}: no dataset {dataset!r} in the sweep (it has {names}); use --sweep-dataset")
    part = df[df["dataset"] == dataset]
    # as `witune analyze` does: diagnostics never vote, and each benchmark votes once on its primary metric
    rel = aggregate.add_relative(benchmarks.one_vote(benchmarks.split_roles(part)[0])[0])
    fits = engines.python_engine().fit_plw(plw_view.plw_rows(rel), n_boot=n_boot, seed=seed)
    if not fits:
        raise ConfigError(
            f"{path}: dataset {dataset!r} has fewer than 3 PLW values at response weight 1; nothing to fit"
        )
    f = fits[0]
    interval = f.interval + (
        f"; parametric bootstrap ({f.n_boot}) {f.boot_low:.3g}-{f.boot_high:.3g}" if f.n_boot else ""
    )
    out = SweepOptimum(
        dataset=dataset,
        shape=f.shape,
        reading=f.reading(),
        best_plw=f.best_plw,
        ci_low=f.ci_low,
        ci_high=f.ci_high,
        interval=interval,
        p_value=f.p_lrt,
        n_scores=f.n,
        method=f"{f.method} (Python engine, witune.analysis.python_engine)",
        notes=list(f.notes),
    )
    tuned = part[part["prompt_weight"].notna()]
    if tuned["response_weight"].nunique() > 1:  # a WIT grid: the cell the noise guard supports
        agg = aggregate.aggregates(rel)
        best = noise.guard(rel, agg, aggregate.best_configs(agg))
        if len(best):
            row = best.iloc[0]
            cell = f"({row['prompt_weight']:g}, {row['response_weight']:g})"
            if bool(row["distinguishable"]):
                out.best_lambda_p, out.best_lambda_r = float(row["prompt_weight"]), float(row["response_weight"])
                out.best_evidence = f"the best configuration of your sweep, {row['evidence']}"
            elif row["reference"] == "(0, 1)" or row["evidence"] == noise.IS_IT:
                out.best_lambda_p, out.best_lambda_r = 0.0, 1.0
                out.best_evidence = (
                    "keep conventional tuning (0, 1): the best configuration of your sweep"
                    if row["evidence"] == noise.IS_IT
                    else f"keep conventional tuning (0, 1): no configuration beat it beyond noise (best measured "
                    f"{cell}: {row['evidence']})"
                )
            else:  # no (0, 1) run and nothing beyond noise: the sweep supports no cell
                out.notes.append(f"no configuration is distinguishable from the runner-up (best measured {cell})")
    return out
