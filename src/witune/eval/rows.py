"""The metric row every evaluation returns, the CLI prints and the sweep database stores."""

from __future__ import annotations

from typing import TypedDict


class MetricRow(TypedDict):
    """One metric of one task. `task` keeps a built-in's argument (``witune:generation=FILE``): one row per file."""

    task: str
    metric: str
    value: float
    stderr: float | None
    higher_is_better: bool


def metric_row(task: str, metric: str, value: float, stderr: float | None, higher: bool = True) -> MetricRow:
    return {"task": task, "metric": metric, "value": float(value), "stderr": stderr, "higher_is_better": higher}
