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
    from witune.sweep.db import losses_frame, results_frame

    return (
        validate_results(results_frame(folder, stage=stage), str(folder)),
        validate_losses(losses_frame(folder), str(folder)),
    )


def read_results_table(path: str | Path) -> pd.DataFrame:
    """The checked results table of a sweep folder or a results CSV."""
    from witune.analysis.results import load_results

    return read_sweep_folder(path)[0] if Path(path).is_dir() else load_results(path)


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
        if losses:
            loss_table = load_losses(losses)
        extra = load_features(features) if features else None
        item_table = load_items(items) if items else None

        def advance(stage: str, done: int, total: int) -> None:
            bar.update(task, description=f"{stage} ({len(results):,} rows)", completed=done, total=total)

        analysis = analyze(
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
            dpo=read_dpo_stage(path),
        )
    note = halving_note(path)
    if note:
        analysis.notes.insert(0, note)
    return analysis


def halving_note(path: str | Path) -> str | None:
    """The one line saying that a sweep folder's early-stopped points (successive halving) are left out."""
    if not Path(path).is_dir():
        return None
    from witune.sweep.db import stopped_points

    n = stopped_points(path)
    if not n:
        return None
    return (
        f"{n} point(s) stopped early by successive halving are left out of the mixed models and aggregates "
        "(trained fewer steps: not comparable); their rung scores are in sweep.db's rungs table."
    )
