"""WIT's two other claims, read from a sweep: the gain over conventional tuning after DPO next to the gain
after SFT alone (a sweep with a `dpo:` stage), and prompt robustness per run (`witune:robustness`).

Both reuse the existing views: `wit.relative_gains` computes the gains of each stage, against conventional
tuning (0, 1) *of the same stage* (IT then DPO), so "gain after DPO" answers "is a WIT model still ahead of a
conventionally tuned one once both went through the same DPO?". Robustness columns are diagnostics: shown
beside the scores, never averaged into them.
"""

from __future__ import annotations

import pandas as pd

from witune.analysis import wit

WEIGHTS = ["model", "dataset", "normalization", "prompt_weight", "response_weight"]
ROBUSTNESS = ["robustness_clean_acc", "robustness_drop", "robustness_worst_acc"]


def _mean_gain(df: pd.DataFrame) -> pd.Series:
    g = wit.relative_gains(df)
    g = g[g["prompt_weight"].notna()]
    return g.groupby(WEIGHTS)["gain"].mean() * 100


def stage_gains(sft: pd.DataFrame, dpo: pd.DataFrame) -> pd.DataFrame:
    """Per model x dataset x normalisation x (lambda_p, lambda_r): mean gain over IT in percent after SFT
    (`gain_sft_pct`) and after DPO (`gain_dpo_pct`), and the configuration's mean score change through DPO
    (`dpo_change`, raw score units, higher-is-better metrics only). Empty when either stage has no IT run."""
    a, b = _mean_gain(sft), _mean_gain(dpo)
    if a.empty or b.empty:
        return pd.DataFrame(columns=WEIGHTS + ["gain_sft_pct", "gain_dpo_pct", "dpo_change"])
    out = pd.concat([a.rename("gain_sft_pct"), b.rename("gain_dpo_pct")], axis=1).reset_index()
    keys = WEIGHTS + ["benchmark", "metric"]
    both = (
        sft[sft["higher_is_better"]]
        .groupby(keys)["score"]
        .mean()
        .rename("s")
        .to_frame()
        .join(dpo[dpo["higher_is_better"]].groupby(keys)["score"].mean().rename("d"), how="inner")
    )
    change = (both["d"] - both["s"]).groupby(WEIGHTS).mean().rename("dpo_change").reset_index()
    return out.merge(change, on=WEIGHTS, how="left").sort_values(WEIGHTS).reset_index(drop=True)


def robustness_table(results: pd.DataFrame) -> pd.DataFrame | None:
    """Per configuration (seeds pooled): clean accuracy, drop and worst-case accuracy under prompt
    perturbations; None when no run measured robustness."""
    cols = [c for c in ROBUSTNESS if c in results.columns]
    if not cols:
        return None
    runs = results.groupby("run_id")[WEIGHTS + cols].first()
    if runs[cols].isna().all().all():
        return None
    return runs.groupby(WEIGHTS, dropna=False)[cols].mean().reset_index()
