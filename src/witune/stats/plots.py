"""PNG plots of a data set's statistics: length histograms per field and the per-sample Rg distribution."""

from __future__ import annotations

import math
from pathlib import Path

from witune.atomic import atomic_savefig
from witune.plotting import plot_text
from witune.stats.dataset import DatasetStats


def save_plots(stats: DatasetStats, out_dir: str | Path, name: str = "data") -> list[Path]:
    """Write ``<name>_lengths.png`` and ``<name>_rg.png`` into ``out_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    series = {f: [s.fields.get(f, 0) for s in stats.lengths] for f in stats.fields}
    if not series:  # chat data: per role
        series = {r: [s.roles.get(r, 0) for s in stats.lengths] for r in stats.roles}
    series["prompt (total)"] = [s.prompt for s in stats.lengths]
    series["completion (total)"] = [s.completion for s in stats.lengths]

    fig, axes = plt.subplots(1, len(series), figsize=(3.2 * len(series), 3.0), squeeze=False)
    for ax, (label, values) in zip(axes[0], series.items()):
        ax.hist(values, bins=40, color="tab:blue", alpha=0.8)
        mean = sum(values) / len(values)
        ax.axvline(mean, color="tab:red", lw=1, label=f"mean {mean:.1f}")
        ax.set_title(plot_text(label))
        ax.set_xlabel("tokens")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("samples")
    fig.suptitle(f"{plot_text(name)}: token lengths ({stats.samples} samples)")
    fig.tight_layout()
    lengths_png = out / f"{name}_lengths.png"
    atomic_savefig(fig, lengths_png, dpi=110)
    plt.close(fig)

    # Rg spans orders of magnitude (0.01 to 100): histogram of log10(Rg) with the Rg = 1 boundary marked.
    ratios = [math.log10(s.rg) for s in stats.lengths if s.prompt > 0 and s.completion > 0]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(ratios, bins=50, color="tab:green", alpha=0.8)
    ax.axvline(0.0, color="black", lw=1, ls="--", label="Rg = 1 (short | long completion)")
    if 0 < stats.rg.ratio_of_means < math.inf:
        ax.axvline(
            math.log10(stats.rg.ratio_of_means),
            color="tab:red",
            lw=1.5,
            label=f"data set Rg (ratio of means) {stats.rg.ratio_of_means:.3g}",
        )
    ax.set_xlabel("log10 Rg per sample (completion tokens / prompt tokens)")
    ax.set_ylabel("samples")
    ax.set_title(f"{plot_text(name)}: {stats.rg.short_fraction:.0%} short-completion samples")
    ax.legend(fontsize=7)
    fig.tight_layout()
    rg_png = out / f"{name}_rg.png"
    atomic_savefig(fig, rg_png, dpi=110)
    plt.close(fig)
    return [lengths_png, rg_png]
