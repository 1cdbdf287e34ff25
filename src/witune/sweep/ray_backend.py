"""Ray backend: each point is a Ray task running the same `execute_point` as the local workers.

The driver (the `witune sweep` process) alone writes the database: tasks return their rows, so the SQLite
file need not be reachable from the cluster's nodes. The run folders (checkpoints, final models) must be on
storage every node sees (a shared file system) for a retried point to resume from its checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from witune.sweep import db
from witune.sweep.local import Report
from witune.sweep.point import Point
from witune.sweep.runner import execute_point, run_dir
from witune.sweep.stage import PointError


def _task(point_json: str, out: str) -> tuple[str, Any, Any]:
    """Runs on a Ray worker: ("done", rows, losses) or ("failed", error text, None); never raises."""
    try:
        result = execute_point(Point.from_json(point_json), Path(out))
        return "done", result.rows, result.losses
    except PointError as e:
        return "failed", str(e), None
    except Exception as e:  # noqa: BLE001 - reported to the driver as the point's error
        return "failed", f"{type(e).__name__}: {e}", None


def run_ray(
    sweep_dir: str | Path,
    run_ids: list[str],
    address: str | None,
    report: Report,
    workers: int = 1,
    cpus_per_point: float = 1.0,
) -> None:
    """Submit every point as a Ray task (Ray bounds the concurrency by the cluster's CPUs) and record results.

    Uses the Ray instance already initialised in this process if there is one, else connects to `address`
    (or starts a local instance with `workers` CPUs when it is None)."""
    import ray

    if not run_ids:
        return
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address,
            num_cpus=None if address else int(workers * cpus_per_point),
            include_dashboard=False,
            log_to_driver=False,
        )
    try:
        remote = ray.remote(num_cpus=cpus_per_point, max_retries=0)(_task)
        points = {r["run_id"]: r["point"] for r in db.runs(sweep_dir)}
        refs = {}
        for rid in run_ids:
            db.mark_running(sweep_dir, rid)
            out = run_dir(sweep_dir, rid).resolve()
            refs[remote.remote(json.dumps(points[rid]), str(out))] = rid
        pending = list(refs)
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            rid = refs[finished[0]]
            try:
                status, payload, losses = ray.get(finished[0])
            except ray.exceptions.RayError as e:  # the worker process itself died
                status, payload, losses = "failed", f"Ray task failed: {str(e).strip().splitlines()[0]}", None
            if status == "done":
                db.finish_run(sweep_dir, rid, payload, [tuple(x) for x in losses])
            else:
                db.mark_failed(sweep_dir, rid, payload)
            report(rid, status)
    finally:
        if started_here:
            ray.shutdown()
