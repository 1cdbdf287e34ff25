"""Plain-language readings of the analysis tables, and the recommendation for this model and data."""

from __future__ import annotations

import numpy as np

from witune.analysis.noise import IS_IT, NO_ESTIMATE, RULE
from witune.analysis.summary import Analysis
from witune.analysis.wit import REGIONS


def _w(x: float) -> str:
    return f"{x:g}"


def aggregate_reading(a: Analysis) -> str:
    parts = []
    for _, row in a.best.iterrows():
        cell = f"({_w(row['prompt_weight'])}, {_w(row['response_weight'])})"
        ties = tied_with(a, row)
        top = (
            f"the top relative aggregate, {row['relative']:.2f}, is a tie between {cell} and {', '.join(ties)}"
            if ties
            else f"the best configuration is (λp, λr) = {cell} with a relative aggregate of {row['relative']:.2f}"
        )
        parts.append(
            f"for {row['model']} on {row['dataset']} {top} (1 = best run on every task); "
            f"against {row.get('reference') or 'the others'} on raw scores: {row.get('evidence', 'not checked')}"
        )
    base = (
        " The base model (no tuning) is placed on the tuned runs' scale, so it can fall below 0 (or above 1): "
        "its relative aggregate says how far outside the tuned runs' range it lies, not a rank among them."
        if a.aggregates["prompt_weight"].isna().any()
        else ""
    )
    return (
        (
            "Each benchmark's primary score is min-max normalised within each dataset × benchmark, so every "
            "benchmark counts once whatever its number of subtasks (diagnostics such as prompt NLL are left out); "
            + "; ".join(parts)
            + ". Min-max scaling stretches any difference, noise included, to the full "
            "[0, 1] range, so the best relative aggregate alone is no evidence. " + RULE + base
        )
        if parts
        else "No fine-tuned runs to compare."
    )


def wit_reading(a: Analysis) -> str:
    if a.gains.empty:
        return "No conventional-tuning (0, 1) run, so gains over it cannot be computed."
    tuned = a.gains[a.gains["prompt_weight"].notna()]
    mean = tuned.groupby(["model", "dataset", "prompt_weight", "response_weight"])["gain"].mean()
    best = mean.groupby(level=[0, 1]).max()
    counts = {r["region"]: r for _, r in a.optimum_counts.iterrows()}
    nz = counts[REGIONS["prompt_helps"]]
    lead = (
        f"The best measured cell beats conventional tuning by {100 * best.mean():.1f}% on average over "
        f"model × dataset panels (largest {100 * best.max():.1f}%). In {nz['count']} of {nz['of']} "
        f"model × dataset × benchmark combinations ({100 * nz['share']:.0f}%) the best measured prompt weight is "
        "non-zero. "
    )
    return lead + optimum_evidence(a)


def optimum_evidence(a: Analysis) -> str:
    """What the optimum counts are worth: the noise guard's verdict (the one the recommendation uses), since the
    counts and gains are point estimates of each combination's best cell."""
    panels = len(a.best)
    beyond = int(a.best["distinguishable"].astype(bool).sum()) if "distinguishable" in a.best else 0
    if beyond == 0:
        where = "the one model × dataset panel" if panels == 1 else f"each of the {panels} model × dataset panels"
        return (
            f"These are point estimates, and within noise: in {where} the noise guard found no configuration "
            "better than the reference beyond noise, so they do not show that ignoring prompt tokens (or any "
            "other cell) was not optimal."
        )
    return (
        f"These are point estimates; the noise guard found a configuration better than the reference beyond noise "
        f"in {beyond} of {panels} model × dataset panels (the others are within noise)."
    )


def plw_reading(a: Analysis) -> str:
    if not a.fits:
        return "The sweep has too few prompt loss weights (with response weight 1) for the quadratic fit."
    out = []
    for f in a.fits:
        text = f"On {f.dataset} ({f.model}): {f.reading()}"
        if f.interval and np.isfinite(f.ci_low):
            text += f" (interval: {f.interval})"
        if f.notes:
            text += " Notes: " + "; ".join(f.notes) + "."
        out.append(text + ("" if text.endswith(".") else "."))
    return " ".join(out)


def gam_reading(a: Analysis) -> str:
    if a.gam is None:
        return "The optimal-PLW-per-Rg table needs several datasets with different generation ratios Rg."
    t = a.gam.table
    parts = []
    for _, row in t.iloc[[0, -1]].drop_duplicates("rg").iterrows():
        if row["flat"]:
            parts.append(
                f"at Rg = {row['rg']:g} the PLW makes no detectable difference (Holm p = {row['p_flat']:.2g}): "
                "no optimum is read there"
            )
        else:
            paper = (
                f"; the paper's raw-PLW model puts it at {row['paper_optimal_plw']:.3g}"
                if "paper_optimal_plw" in row and np.isfinite(row["paper_optimal_plw"])
                else ""
            )
            parts.append(
                f"at Rg = {row['rg']:g} the wp-scale fit's optimum is PLW ≈ {row['optimal_plw']:.3g} "
                f"(Holm p = {row['p_flat']:.2g} that the PLW does not matter){paper}"
            )
    flat = int(t["flat"].sum())
    said = "; ".join(parts)
    said = said[:1].upper() + said[1:]
    return (
        f"Fitted with [{a.gam.engine}] {a.gam.model} ({a.gam.n_runs} runs). {said}. {flat} of {len(t)} Rg rows "
        "are flat: a Wald test cannot tell the PLWs apart there (p ≥ 0.05 after Holm's correction over the rows), "
        "so they have no optimum."
    )


def correlation_reading(a: Analysis) -> str:
    if a.correlations.empty:
        return "No correlations: " + _why_no_correlation(a) + "."
    top = a.correlations.reindex(a.correlations["spearman"].abs().sort_values(ascending=False).index).iloc[0]
    direction = "higher" if top["spearman"] > 0 else "lower"
    return (
        f"The strongest link: {top['level']} feature `{top['feature']}` (Spearman {top['spearman']:+.2f}, "
        f"p = {top['p_spearman']:.2g}, n = {top['n']} distinct {top['level']}s): larger values go with a "
        f"{direction} optimal prompt weight."
    )


def _why_no_correlation(a: Analysis) -> str:
    units = {level: a.optima[level].nunique() for level in ("dataset", "benchmark", "model")}
    have = ", ".join(f"{n} {level}{'s' if n != 1 else ''}" for level, n in units.items())
    if all(n < 3 for n in units.values()):
        return (
            f"a rank correlation with the optimal prompt weight needs at least 3 datasets, benchmarks or models "
            f"with different feature values (such as `rg`), and the sweep has {have}"
        )
    return (
        f"the sweep has {have}, but no numeric feature (such as `rg`) varies over 3 or more of them "
        "with different optimal prompt weights"
    )


def dynamics_reading(a: Analysis) -> str:
    if "mean_rsd" not in a.runs.columns:
        return (
            "No training losses were given, so the loss RSD is missing; the other panels show the "
            "per-run diagnostics the sweep reported."
        )
    r = a.runs.dropna(subset=["mean_rsd", "prompt_weight"])
    if r.empty:
        return "Every run logged fewer than 5 steps, so the loss RSD over 5-step windows is not defined."
    by = r.groupby("prompt_weight")["mean_rsd"].mean()
    return (
        f"Training loss is least stable at prompt weight {by.idxmax():g} (mean 5-step RSD {by.max():.3f}) "
        f"and most stable at {by.idxmin():g} ({by.min():.3f})."
    )


def tied_with(a: Analysis, row) -> list[str]:
    """The other tuned configurations of ``row``'s panel whose relative aggregate equals the best's."""
    agg = a.aggregates
    panel = agg[(agg["model"] == row["model"]) & (agg["dataset"] == row["dataset"]) & agg["prompt_weight"].notna()]
    same = panel[np.isclose(panel["relative"], row["relative"])]
    me = np.isclose(same["prompt_weight"], row["prompt_weight"]) & np.isclose(
        same["response_weight"], row["response_weight"]
    )
    others = same[~(me & (same["normalization"] == row["normalization"]))]
    return [f"({_w(r['prompt_weight'])}, {_w(r['response_weight'])})" for _, r in others.iterrows()]


def _is_it_reason(a: Analysis, row) -> str:
    ties = tied_with(a, row)
    if ties:
        # min-max over a few runs: a tie at the top is no ranking at all, and says nothing of noise either
        return (
            f"a tie, not a best: it ties with {', '.join(ties)} at a relative aggregate of {row['relative']:.2f} "
            "(min-max over so few runs: each leads on some benchmark), so no configuration beat conventional "
            "tuning in this sweep"
        )
    return "highest relative aggregate in this sweep; no other configuration leads it"


def recommendation(a: Analysis) -> list[str]:
    """One sentence per model x dataset. Another configuration than conventional tuning (0, 1) is recommended
    only when the noise guard (``witune.analysis.noise``) found it better beyond noise; otherwise keep (0, 1).
    The PLW fit of the λr = 1 rows is quoted by its shape (its own test, pooled over PLWs and benchmarks)."""
    fits = {f.dataset: f for f in a.fits}
    out = []
    for _, row in a.best.iterrows():
        head = f"{row['model']} on {row['dataset']}: "
        cell = f"λp = {_w(row['prompt_weight'])}, λr = {_w(row['response_weight'])}"
        evidence = row.get("evidence", NO_ESTIMATE)
        reference = row.get("reference", "")
        if bool(row.get("distinguishable", False)):
            text = head + f"train with {cell} ({evidence}"
        elif evidence == IS_IT:
            text = head + "keep conventional tuning (0, 1) (" + _is_it_reason(a, row)
        elif reference == "(0, 1)":
            text = (
                head + "keep conventional tuning (0, 1): no configuration beat it beyond noise (best measured "
                f"{cell}: {evidence}"
            )
        else:  # no (0, 1) run: nothing to keep, but the ranking is no evidence either
            text = (
                head + f"no configuration is distinguishable from the runner-up, so this sweep supports "
                f"no recommendation (best measured {cell}: {evidence}; the sweep has no (0, 1) run"
            )
        fit = fits.get(row["dataset"])
        if fit is not None:
            text += f"; separately, the PLW fit with λr = 1 says: {fit.reading()}"
        out.append(text + ").")
    return out
