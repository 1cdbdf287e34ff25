"""The metric row every evaluation returns, the CLI prints and the sweep database stores."""

from __future__ import annotations

from typing import TypedDict


class _Structure(TypedDict, total=False):
    """lm-eval's group structure, where the harness gave it (witune.analysis.groups): the task's parent group,
    the items it was scored on, and for a group's rows whether lm-eval weights its subtasks by size."""

    parent: str
    n_items: int
    weight_by_size: bool


class MetricRow(_Structure):
    """One metric of one task. `task` keeps a built-in's argument (``witune:generation=FILE``): one row per file."""

    task: str
    metric: str
    value: float
    stderr: float | None
    higher_is_better: bool


def metric_row(task: str, metric: str, value: float, stderr: float | None, higher: bool = True) -> MetricRow:
    return {"task": task, "metric": metric, "value": float(value), "stderr": stderr, "higher_is_better": higher}
