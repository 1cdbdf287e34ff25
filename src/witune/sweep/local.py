"""Local backend: N long-lived worker processes on this machine, each running whole points.

Workers live for the whole sweep, so the heavy imports (torch, transformers, lm-eval) are paid once per
worker rather than once per point. They are started with the `spawn` method (no fork of a process that
holds threads) and die with the sweep (`die_with_parent`): a SIGKILLed sweep leaves no orphan writing to the
database while `--resume` runs the same points again.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from witune.sweep import db
from witune.sweep.runner import run_point
from witune.sweep.stage import die_with_parent

Report = Callable[[str, str], None]  # (run_id, "done" | "failed") after each point


def run_local(
    sweep_dir: str | Path,
    run_ids: list[str],
    workers: int,
    report: Report,
    task: Callable[[str, str], str] = run_point,
) -> None:
    """Run the points `run_ids` (already in the database) on `workers` processes; every outcome is in the db.
    `task(sweep_dir, run_id)` runs one point in a worker (picklable; default: the whole point, `run_point`)."""
    if not run_ids:
        return
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(workers, len(run_ids)), mp_context=ctx, initializer=die_with_parent
    ) as pool:
        futures = {pool.submit(task, str(sweep_dir), rid): rid for rid in run_ids}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                rid = futures[fut]
                try:
                    status = fut.result()
                except BrokenProcessPool:
                    # A worker was killed (out of memory, a signal): its point and the queued ones cannot run
                    # in this pool. Record them; `--resume` retries them.
                    db.mark_failed(sweep_dir, rid, "worker process died (killed or out of memory); rerun with --resume")
                    status = "failed"
                except Exception as e:  # noqa: BLE001 - a bug outside run_point's own handling
                    db.mark_failed(sweep_dir, rid, f"{type(e).__name__}: {e}")
                    status = "failed"
                report(rid, status)
