"""`run_sweep`: expand the grid, register the points, run what is not done, one sweep per folder at a time."""

from __future__ import annotations

import dataclasses
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from witune.atomic import atomic_write_text
from witune.errors import ConfigError
from witune.sweep import db
from witune.sweep.config import SweepConfig
from witune.sweep.grid import expand
from witune.sweep.preflight import check_names

if TYPE_CHECKING:
    from witune.sweep.local import Report


@dataclass
class SweepSummary:
    folder: Path
    points: int  # points in the grid
    skipped: int  # already done before this call
    done: int  # finished by this call
    failed: int  # failed in this call
    stopped: int = 0  # successive halving: points stopped at an early rung (not comparable with finished ones)


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the sweep folder: two sweeps running the same points would train them twice.
    The kernel drops it when the process dies, even by SIGKILL, so a killed sweep never blocks `--resume`."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / db.LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another `witune sweep` is running in {folder}") from None
        yield
    finally:
        os.close(fd)


def run_sweep(cfg: SweepConfig, resume: bool = False, progress: bool = True) -> SweepSummary:
    """Run every point of `cfg` that is not done yet. Without `resume`, a folder with results is an error
    (so a second sweep never silently mixes into the first); with it, done points are skipped and the others
    (pending, interrupted, failed) run again, interrupted trainings from their newest checkpoint."""
    folder = Path(cfg.output_dir)
    points = expand(cfg)
    check_names(cfg, points)  # a missing file or an unknown task would fail every point, each after training
    with folder_lock(folder):
        path = db.db_path(folder)
        if path.is_file():
            db.result_rows(path)  # reads and checks every stored row: a damaged database stops here, not later
        if path.is_file() and db.runs(path):
            if not resume:
                raise ConfigError(
                    f"{folder} already holds a sweep; continue it with --resume, or choose another output_dir (--out)"
                )
            check_same_sweep(folder, cfg)
        atomic_write_text(folder / "sweep.yaml", yaml.safe_dump(_record(cfg), sort_keys=False))
        db.add_points(path, points)
        status = {r["run_id"]: r["status"] for r in db.runs(path)}
        todo = [p.run_id for p in points if status.get(p.run_id) != "done"]
        summary = SweepSummary(folder, len(points), len(points) - len(todo), 0, 0)
        with _progress(len(points), summary.skipped, progress) as report_bar:

            def report(run_id: str, outcome: str) -> None:
                if outcome == "done":
                    summary.done += 1
                elif outcome == "failed":
                    summary.failed += 1
                report_bar(run_id, outcome)

            if cfg.search == "halving" or cfg.curve_every:  # on either backend: the rungs are its own loop
                from witune.sweep.halving import run_halving

                summary.stopped = run_halving(cfg, folder, points, report)
            else:
                run_points(cfg, folder, todo, report)
    return summary


def run_points(cfg: SweepConfig, folder: Path, run_ids: list[str], report: Report) -> None:
    """Train and evaluate the points `run_ids` (registered in the folder's database) on the sweep's backend;
    every outcome goes into the database. The caller holds the folder's lock (`folder_lock`)."""
    if cfg.backend == "ray":
        from witune.sweep.ray_backend import run_ray

        run_ray(folder, run_ids, cfg.ray_address, report, workers=cfg.workers)
    else:
        from witune.sweep.local import run_local

        run_local(folder, run_ids, cfg.workers, report)


# Keys that say how and where the sweep runs, not what it trains or measures: they may change on --resume.
RUN_KEYS = frozenset({"workers", "backend", "ray_address", "output_dir", "max_points", "base_path"})
# A finished or stopped halving search may be continued as a grid over the same points (stopped points then train
# to the end from their checkpoints); the halving keys mean nothing to the grid.
_HALVING_KEYS = frozenset(
    {"search", "halving_eta", "halving_rungs", "halving_first_rung", "halving_heldout", "halving_heldout_limit"}
)


def check_same_sweep(folder: Path, cfg: SweepConfig) -> None:
    """Refuse a --resume whose config is not the folder's `sweep.yaml` (one line naming every differing key):
    the two would mix in one database, `sweep.yaml` and the halving record would be overwritten, and the
    analysis would compare points of two sweeps."""
    recorded = folder / "sweep.yaml"
    if not recorded.is_file():
        return
    from witune.yaml_io import load_yaml_file

    old = load_yaml_file(recorded)
    if not isinstance(old, dict):
        raise ConfigError(f"{recorded}: not a sweep record (expected a mapping); restore it or use another --out")
    new = yaml.safe_load(yaml.safe_dump(_record(cfg), sort_keys=False))  # as it would be stored
    skip = RUN_KEYS | (_HALVING_KEYS if old.get("search") == "halving" and new["search"] == "grid" else frozenset())
    diffs = [
        f"{key} {old_value!r} -> {new_value!r}"
        for name in new
        if name in old and name not in skip
        for key, old_value, new_value in _differences(name, old[name], new[name])
    ]
    if diffs:
        raise ConfigError(
            f"cannot resume the sweep in {folder}: its sweep.yaml has other settings: {'; '.join(diffs)}. "
            "Resume with the same sweep config, or give another output_dir (--out)"
        )


def _differences(name: str, old: object, new: object) -> list[tuple[str, object, object]]:
    """(key, old, new) for a differing value; a mapping (set, base, dpo, weight_axes) key by key."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            (f"{name}.{k}", old.get(k), new.get(k)) for k in sorted({*old, *new}, key=str) if old.get(k) != new.get(k)
        ]
    return [] if old == new else [(name, old, new)]


def _record(cfg: SweepConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["weights"] = [list(w) for w in d["weights"]]
    return d


@contextmanager
def _progress(total: int, done: int, enabled: bool):
    """A rich progress bar over points; yields report(run_id, outcome)."""
    if not enabled:
        yield lambda run_id, outcome: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
    ) as bar:
        task = bar.add_task("", total=total, completed=done)
        failed = 0

        def report(run_id: str, outcome: str) -> None:
            nonlocal failed
            failed += outcome == "failed"
            bar.update(
                task, advance=1, description=f"last: {run_id} {outcome}" + (f", {failed} failed" if failed else "")
            )

        yield report
