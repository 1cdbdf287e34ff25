"""`witune sweep status`: one table row per point (weights, status, time, main metrics, successive halving's
rungs, error)."""

from __future__ import annotations

from pathlib import Path

from witune.results_schema import benchmark_name
from witune.sweep import db

_STYLE = {
    "done": "green",
    "failed": "red",
    "running": "yellow",
    "interrupted": "magenta",
    "pending": "dim",
    "stopped": "cyan",
}
MAX_METRIC_COLUMNS = 4


def _fmt(x: float | None, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}g}"


def status_table(folder: str | Path):
    """A rich Table of the sweep in `folder`; metric columns are the first few task/metric pairs found,
    benchmarks first, diagnostics after."""
    from rich.table import Table

    runs = db.runs(db._require(folder))
    by_run: dict[str, dict[tuple[str, str], float | None]] = {}
    names: dict[tuple[str, str], tuple[bool, str]] = {}  # (task, metric) -> (is a diagnostic, column name)
    for run_id, row in db.result_rows(db.db_path(folder)):
        if row.role != "detail":
            key = (row.task if row.stage == "sft" else f"{row.stage}:{row.task}", row.metric)
            by_run.setdefault(run_id, {})[key] = row.value
            names[key] = (row.role == "diagnostic", row.column or f"{benchmark_name(key[0])} {row.metric}")
    keys = sorted(names, key=lambda k: (names[k][0], k))[:MAX_METRIC_COLUMNS]  # benchmarks first
    live = db.sweep_is_live(folder)
    counts = db.point_counts(folder)
    table = Table(title=f"sweep {folder}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    variants = any(r["point"].get("labels", {}).get("variant") for r in runs)  # a sweep with weight_axes
    columns = ["run", "model", "dataset", "λp", "λr", "norm", "seed", "status", "tries", "time"]
    if variants:
        columns.insert(columns.index("status"), "variant")
    for col in columns:
        table.add_column(col, justify="right" if col in ("λp", "λr", "seed", "tries", "time") else "left")
    for key in keys:
        table.add_column(names[key][1].split("=")[0], justify="right")
    rungs: dict[str, list[str]] = {}
    for g in db.rungs(folder):  # successive halving: what each rung scored and decided, to read before trusting it
        decision = g["decision"] or "waiting"
        rungs.setdefault(g["run_id"], []).append(f"step {g['steps']}: {_fmt(g['score'], 5)} {decision}")
    if rungs:
        table.add_column("rungs (held-out NLL)", overflow="fold")
    table.add_column("error", overflow="fold", max_width=60)
    for r in runs:
        lab = r["point"].get("labels", {})
        values = by_run.get(r["run_id"], {})
        seconds = r["seconds"]
        table.add_row(
            r["run_id"],
            str(lab.get("model", "")),
            str(lab.get("dataset", "")),
            _fmt(lab.get("prompt_weight")),
            _fmt(lab.get("response_weight")),
            str(lab.get("normalization", "")),
            str(lab.get("seed", "")),
            *([str(lab.get("variant", ""))] * variants),
            f"[{_STYLE[db.point_status(r, live)]}]{db.point_status(r, live)}[/]",
            str(r["attempts"]),
            "" if seconds is None else f"{seconds:.0f}s",
            *[_fmt(values.get(k)) for k in keys],
            *(["; ".join(rungs.get(r["run_id"], []))] if rungs else []),
            (r["error"] or "")[:300],
        )
    return table
