"""Where the sweep and the analysis meet: read a sweep folder (or a results CSV) into the checked tables the
analysis takes, and analyse them, with the gains after SFT and after DPO when the sweep chained a DPO stage.
The analysis never imports the sweep (it sits above it); this layer sits above both.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from witune.analysis.summary import Analysis


def read_sweep_folder(folder: str | Path, stage: str = "sft") -> tuple[pd.DataFrame, pd.DataFrame]:
    """A sweep folder's results (of one stage: "sft", or "dpo" when the sweep chains DPO) and training losses,
    read through the sweep's database and checked by the analysis."""
    from witune.analysis.results import validate_losses, validate_results
    from witune.errors import ConfigError
    from witune.sweep.db import losses_frame, point_counts, results_frame

    results = results_frame(folder, stage=stage)
    if results.empty:  # said as the sweep's state, not as a CSV without rows
        counts = point_counts(folder)
        state = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no points"
        raise ConfigError(f"{folder}: the sweep has no finished point to analyse yet ({state})")
    return (
        validate_results(results, str(folder)),
        validate_losses(losses_frame(folder), str(folder)),
    )


def select_variant(results: pd.DataFrame, variant: str | None, source: str) -> tuple[pd.DataFrame, str | None]:
    """The rows of one variant (the further weight axes of a sweep, `weight_axes`) and the note that says so.

    Runs that trained with other span, role or dynamic weights are other configurations: pooling them would
    average over a setting the analysis does not see. With one variant nothing is to choose; with several,
    `variant` must name one (refused in one line listing them).
    """
    from witune.errors import ConfigError

    have = sorted(set(results["variant"])) if "variant" in results.columns else [""]
    if variant is None and len(have) == 1:
        chosen = have[0]
    elif variant is None:
        raise ConfigError(
            f"{source}: the runs trained with {len(have)} weight variants ({'; '.join(repr(v) for v in have)}); "
            "analyse one at a time with --variant, e.g. --variant " + repr(have[0])
        )
    elif variant not in have:
        raise ConfigError(f"{source}: no runs of variant {variant!r}; the variants are {'; '.join(map(repr, have))}")
    else:
        chosen = variant
    if "variant" not in results.columns:
        return results, None
    kept = results[results["variant"] == chosen].drop(columns=["variant"]).reset_index(drop=True)
    return kept, f"variant {chosen!r}: only the runs that trained with these weights ({len(have)} in the sweep)"


def read_results_table(path: str | Path) -> pd.DataFrame:
    """The checked results table of a sweep folder or a results CSV."""
    from witune.analysis.results import load_results

    table = read_sweep_folder(path)[0] if Path(path).is_dir() else load_results(path)
    return select_variant(table, None, str(path))[0]  # several variants: refused, never pooled


def read_dpo_stage(path: str | Path) -> pd.DataFrame | None:
    """The DPO-stage results of a sweep folder that chains DPO after SFT; None for a CSV or a sweep without one."""
    if not Path(path).is_dir():
        return None
    from witune.analysis.results import validate_results
    from witune.sweep.db import results_frame

    dpo = results_frame(path, stage="dpo")
    return None if dpo.empty else validate_results(dpo, str(path))


def analyze_results(
    path: str | Path,
    losses: str | Path | None = None,
    features: str | Path | None = None,
    engine: str = "auto",
    primary: Mapping[str, str] | None = None,
    groups: Mapping[str, str] | None = None,
    items: str | Path | None = None,
    r_timeout: float | None = None,
    n_boot: int = 0,
    seed: int = 0,
    progress: bool = True,
    variant: str | None = None,
) -> Analysis:
    """Every analysis of a sweep folder or results CSV (`witune analyze`, `witune report`); `losses`,
    `features` and `items` (per-item scores, for the noise guard's pairing) are optional CSVs (a sweep folder
    brings its own losses). One progress bar on stderr names each stage (every stage is linear in the rows)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from witune.analysis.results import load_features, load_items, load_losses, load_results
    from witune.analysis.summary import analyze

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(f"reading {path}", total=1)
        if Path(path).is_dir():
            results, loss_table = read_sweep_folder(path)
        else:
            results, loss_table = load_results(path), None
        results, variant_note = select_variant(results, variant, str(path))
        dpo = read_dpo_stage(path)
        if dpo is not None:
            dpo = select_variant(dpo, variant, str(path))[0]
        if losses:
            loss_table = load_losses(losses)
        extra = load_features(features) if features else None
        item_table = load_items(items) if items else None

        def advance(stage: str, done: int, total: int) -> None:
            bar.update(task, description=f"{stage} ({len(results):,} rows)", completed=done, total=total)

        a = analyze(
            results,
            loss_table,
            extra,
            n_boot=n_boot,
            seed=seed,
            progress=advance,
            engine=engine,
            primary=dict(primary or {}),
            groups=dict(groups or {}),
            items=item_table,
            r_timeout=r_timeout,
            dpo=dpo,
        )
    if Path(path).is_dir():
        from witune.sweep.db import progress_note

        notes = [variant_note, halving_note(path), progress_note(path)]
    else:
        notes = [variant_note]
    a.notes[:0] = [n for n in notes if n]  # first: every number below rests on these runs only
    return a


def halving_note(path: str | Path) -> str | None:
    """The one line saying that a sweep folder's early-stopped points (successive halving) are left out."""
    from witune.sweep.db import stopped_points

    n = stopped_points(path)
    if not n:
        return None
    return (
        f"{n} point(s) stopped early by successive halving are left out of the mixed models and aggregates "
        "(trained fewer steps: not comparable); their rung scores are in sweep.db's rungs table."
    )
