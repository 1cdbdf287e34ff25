"""Ray backend: each point is a Ray task running the same work as the local workers (`execute_point` for a
grid point; one rung for successive halving, `witune.sweep.halving.rung_work`).

The driver (the `witune sweep` process) alone writes the database: tasks return their rows, so the SQLite
file need not be reachable from the cluster's nodes. The run folders (checkpoints, final models) must be on
storage every node sees (a shared file system) for a retried point to resume from its checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from witune.sweep import db
from witune.sweep.config import SweepConfig
from witune.sweep.local import Report
from witune.sweep.point import Point
from witune.sweep.runner import PointResult, execute_point, run_dir
from witune.sweep.stage import PointError

Work = Callable[[Point, Path, bool], Any]  # (point, run folder, already trained?) -> what `record` stores
Record = Callable[[Path, str, Any], None]  # (sweep folder, run_id, what the work returned): driver-side


def whole_point(point: Point, out: Path, trained: bool) -> PointResult:
    """A grid point's work: train, measure and evaluate it (`execute_point`)."""
    return execute_point(point, out)


def finish_point(sweep_dir: Path, run_id: str, result: PointResult) -> None:
    db.finish_run(sweep_dir, run_id, result.rows, result.losses)


@contextmanager
def ray_session(address: str | None, workers: int, cpus_per_point: float = 1.0) -> Iterator[Any]:
    """The `ray` module, initialised: the instance already running in this process if there is one, else one
    connected to `address` (or a local one with `workers` CPUs when it is None), shut down on exit."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address,
            num_cpus=None if address else int(workers * cpus_per_point),
            include_dashboard=False,
            log_to_driver=False,
        )
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def _task(work: Work, point_json: str, out: str, trained: bool) -> tuple[str, Any]:
    """Runs on a Ray worker: ("done", what `work` returned) or ("failed", error text); never raises."""
    try:
        return "done", work(Point.from_json(point_json), Path(out), trained)
    except PointError as e:
        return "failed", str(e)
    except Exception as e:  # noqa: BLE001 - reported to the driver as the point's error
        return "failed", f"{type(e).__name__}: {e}"


def run_ray(
    sweep_dir: str | Path,
    run_ids: list[str],
    address: str | None,
    report: Report,
    workers: int = 1,
    cpus_per_point: float = 1.0,
    work: Work = whole_point,
    record: Record = finish_point,
) -> None:
    """Submit `work` for every point as a Ray task (Ray bounds the concurrency by the cluster's CPUs) and
    `record` each result here, in the driver. Default: whole grid points; successive halving passes a rung.
    Ray: as `ray_session` gives it."""
    if not run_ids:
        return
    with ray_session(address, workers, cpus_per_point) as ray:
        remote = ray.remote(num_cpus=cpus_per_point, max_retries=0)(_task)
        runs = {r["run_id"]: r for r in db.runs(sweep_dir)}
        refs = {}
        for rid in run_ids:
            trained = runs[rid]["status"] == "done"  # halving's last rung of a point finished before a kill
            if not trained:
                db.mark_running(sweep_dir, rid)
            out = run_dir(sweep_dir, rid).resolve()
            refs[remote.remote(work, json.dumps(runs[rid]["point"]), str(out), trained)] = rid
        pending = list(refs)
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            rid = refs[finished[0]]
            try:
                status, payload = ray.get(finished[0])
            except ray.exceptions.RayError as e:  # the worker process itself died
                status, payload = "failed", f"Ray task failed: {str(e).strip().splitlines()[0]}"
            if status == "done":
                record(Path(sweep_dir), rid, payload)
            else:
                db.mark_failed(sweep_dir, rid, payload)
            report(rid, status)


def backend_session(cfg: SweepConfig) -> AbstractContextManager[object]:
    """One Ray instance for every rung of a search or every run of `witune tune` (`backend: ray`); nothing for
    the local backend."""
    if cfg.backend != "ray":
        return nullcontext()
    return ray_session(cfg.ray_address, cfg.workers)
