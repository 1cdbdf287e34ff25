"""Sweeps: a grid of trainings + evaluations recorded in an SQLite database, resumable, local workers or Ray.

    cfg = load_sweep_config("configs/sweeps/plw-tiny.yaml")
    summary = run_sweep(cfg, resume=True)
    frame = db.results_frame(cfg.output_dir)   # what `witune analyze` reads

Modules: `config` (SweepConfig, presets), `grid` (points with stable ids), `db` (the database),
`runner` (one point), `local` / `ray_backend` (where points run), `orchestrate` (the loop over points), `status` (the table).
"""

from witune.sweep.config import PRESETS, SweepConfig, load_sweep_config
from witune.sweep.grid import expand
from witune.sweep.orchestrate import SweepSummary, run_sweep
from witune.sweep.point import EvalSpec, Point

__all__ = ["PRESETS", "EvalSpec", "Point", "SweepConfig", "SweepSummary", "expand", "load_sweep_config", "run_sweep"]
