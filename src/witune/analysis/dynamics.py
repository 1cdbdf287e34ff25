"""Training dynamics against the prompt weight (PLW paper, section 5.3 and Figure 2).

* Loss stability: relative standard deviation (RSD = sample std / mean) of the training loss over
  every window of 5 consecutive logged steps (sliding by one step), averaged per run ("mean RSD").
  The paper says "RSD over all five-step windows"; the sample std (ddof=1) matches R's ``sd``,
  which the paper's analysis used.
* Weight distance: L2 norm of (tuned - base) over all parameters (`witune.models.distance.l2_distance`, measured by the sweep).
* Memorisation: corpus BLEU of generations for training prompts against the training completions,
  with the paper's sacreBLEU signature (13a tokenisation, exp smoothing): computed by `witune.eval.generation`.
* Generation length on an evaluation set, as reported per run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from witune.plotting import plot_text
from witune.results_schema import DIAGNOSTICS

WINDOW = 5


def window_rsd(loss: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """RSD of every run of ``window`` consecutive losses (empty if the run is shorter than a window)."""
    loss = np.asarray(loss, dtype=float)
    if len(loss) < window:
        return np.empty(0)
    wins = np.lib.stride_tricks.sliding_window_view(loss, window)
    return wins.std(axis=1, ddof=1) / wins.mean(axis=1)


def mean_rsd(losses: pd.DataFrame, window: int = WINDOW) -> pd.DataFrame:
    """Per run: mean RSD of the loss over all ``window``-step windows, in step order."""
    rows = []
    for run_id, part in losses.groupby("run_id", sort=False):
        rsd = window_rsd(part.sort_values("step")["loss"].to_numpy(), window)
        rows.append(
            {"run_id": run_id, "mean_rsd": float(rsd.mean()) if rsd.size else float("nan"), "n_windows": int(rsd.size)}
        )
    return pd.DataFrame(rows, columns=["run_id", "mean_rsd", "n_windows"])


def run_diagnostics(runs: pd.DataFrame, losses: pd.DataFrame | None) -> pd.DataFrame:
    """Join per-run design columns with mean RSD (when losses are given) and the reported diagnostics."""
    out = runs.copy()
    if losses is not None and len(losses):
        out = out.merge(mean_rsd(losses)[["run_id", "mean_rsd"]], on="run_id", how="left")
    return out


def dynamics_figure(diag: pd.DataFrame):
    """One panel per available diagnostic against wp = PLW**0.30103, a line per model x dataset.

    Uses the runs with response weight 1 (the PLW design) when there are any, else every tuned run
    (then the x axis is lambda_p and different lambda_r are averaged). Returns None if nothing to plot.
    """
    import matplotlib.pyplot as plt

    from witune.analysis.plw import P

    tuned = diag[diag["prompt_weight"].notna()]
    plw = tuned[np.isclose(tuned["response_weight"], 1.0)]
    data = plw if plw["prompt_weight"].nunique() >= 2 else tuned
    cols = [c for c in DIAGNOSTICS if c in data.columns and data[c].notna().any()]
    if not cols or data.empty:
        return None
    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.4), squeeze=False)
    ticks = sorted(data["prompt_weight"].unique())
    for ax, col in zip(axes.flat, cols):
        for (model, dataset), part in data.groupby(["model", "dataset"]):
            mean = part.groupby("prompt_weight")[col].mean()
            ax.plot(
                np.power(mean.index.to_numpy(float), P),
                mean.to_numpy(),
                marker="o",
                ms=3,
                label=plot_text(f"{model} / {dataset}"),
            )
        ax.set_xticks(np.power(np.asarray(ticks, float), P), [f"{t:g}" for t in ticks], rotation=60, fontsize=6)
        ax.set_xlabel("prompt weight (wp scale)")
        ax.set_title(col.replace("_", " "), fontsize=9)
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    return fig
