"""The sweep database: one SQLite file (`<sweep folder>/sweep.db`, WAL mode), stdlib `sqlite3` only.

Tables::

    runs(run_id PK, point JSON, status, started, finished, seconds, error, attempts)
    metrics(run_id, task, metric, value, stderr, higher_is_better, PRIMARY KEY(run_id, task, metric))
    losses(run_id, step, loss, PRIMARY KEY(run_id, step))
    task_structure(run_id, task, parent, n_items, weight_by_size, PRIMARY KEY(run_id, task))  (lm-eval's groups)

Every write is one transaction and metric/loss rows are `INSERT OR REPLACE`d on their keys, so a point that is
re-run (after a kill) replaces its rows instead of adding a second copy. Status: pending -> running -> done |
failed; a `running` row left by a killed sweep is simply run again by `--resume`.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from witune.results_schema import REQUIRED, RUN_COLUMNS

if TYPE_CHECKING:  # a type only: importing witune.eval at run time would load the evaluation code
    from witune.eval.rows import MetricRow

DB_NAME = "sweep.db"
STATUSES = ("pending", "running", "done", "failed")
_NOT_SCORES = {"n_prompts"}  # bookkeeping metrics of built-ins
# Tasks that are diagnostics only: their metrics outside DIAGNOSTIC_COLUMNS (results_schema) stay out of the table.
_DIAGNOSTIC_TASKS = ("witune:robustness", "dpo_pairs")
# Rows of a sweep's second stage (DPO after SFT) carry this task prefix; unprefixed rows are stage "sft".
STAGE_PREFIX = "dpo:"
STAGES = ("sft", "dpo")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, point TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
    started REAL, finished REAL, seconds REAL, error TEXT, attempts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, task TEXT NOT NULL, metric TEXT NOT NULL, value REAL, stderr REAL,
    higher_is_better INTEGER NOT NULL, PRIMARY KEY (run_id, task, metric));
CREATE TABLE IF NOT EXISTS losses (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, loss REAL, PRIMARY KEY (run_id, step));
CREATE TABLE IF NOT EXISTS task_structure (
    run_id TEXT NOT NULL, task TEXT NOT NULL, parent TEXT, n_items INTEGER, weight_by_size INTEGER,
    PRIMARY KEY (run_id, task));
"""


def db_path(folder_or_file: str | Path) -> Path:
    """`folder/sweep.db` for a sweep folder; a path to a file is returned as it is."""
    p = Path(folder_or_file)
    return p / DB_NAME if p.is_dir() or not p.suffix else p


@contextmanager
def connect(path: str | Path) -> Iterator[sqlite3.Connection]:
    """A connection in WAL mode (readers never block the writer) that commits on success, rolls back on error.

    `busy_timeout` lets the worker processes of a sweep wait for each other's short write transactions.
    """
    p = db_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(str(p), timeout=60, isolation_level=None)
    except sqlite3.OperationalError as e:  # e.g. a folder without write permission
        raise _unusable(p, e) from None
    try:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=60000")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a process kill
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                raise  # another process holds the lock past the timeout: not a bad file
            raise _unusable(p, e) from None
        conn.row_factory = sqlite3.Row
        yield conn
    finally:
        conn.close()


def _unusable(path: Path, err: sqlite3.Error):
    from witune.errors import ConfigError

    return ConfigError(f"{path}: not a usable witune sweep database ({err})")


def check_database(path: str | Path) -> Path:
    """Open the database (creating it when absent) and run SQLite's quick integrity check, so that a corrupt
    file is reported before an evaluation of many minutes, not when its results are to be written."""
    p = db_path(path)
    with connect(p) as conn:
        try:
            verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise _unusable(p, e) from None
    if verdict != "ok":
        raise _unusable(p, sqlite3.DatabaseError(verdict))
    return p


@contextmanager
def transaction(path: str | Path) -> Iterator[sqlite3.Connection]:
    with connect(path) as conn:
        conn.execute("BEGIN IMMEDIATE")  # take the write lock now: no deadlock upgrading a read lock later
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def add_points(path: str | Path, points: Iterable[Any]) -> None:
    """Register points (grid.Point) as pending; a point already present keeps its status and results, but gets
    the current point JSON unless it is done (so changed evaluation settings apply to what still has to run)."""
    with transaction(path) as conn:
        for p in points:
            conn.execute(
                "INSERT INTO runs (run_id, point, status) VALUES (?, ?, 'pending') "
                "ON CONFLICT(run_id) DO UPDATE SET point = excluded.point WHERE runs.status != 'done'",
                (p.run_id, p.to_json()),
            )


def mark_running(path: str | Path, run_id: str) -> None:
    with transaction(path) as conn:
        conn.execute(
            "UPDATE runs SET status='running', started=?, finished=NULL, error=NULL, "
            "attempts=attempts+1 WHERE run_id=?",
            (time.time(), run_id),
        )


def mark_failed(path: str | Path, run_id: str, error: str) -> None:
    with transaction(path) as conn:
        conn.execute(
            "UPDATE runs SET status='failed', finished=?, seconds=? - started, error=? WHERE run_id=?",
            (time.time(), time.time(), error, run_id),
        )


def finish_run(path: str | Path, run_id: str, rows: list[MetricRow], losses: list[tuple[int, float]]) -> None:
    """Metrics, losses and status 'done' in one transaction: a kill leaves either all of them or none."""
    with transaction(path) as conn:
        _write_metrics(conn, run_id, rows)
        conn.execute("DELETE FROM losses WHERE run_id=?", (run_id,))
        conn.executemany(
            "INSERT OR REPLACE INTO losses (run_id, step, loss) VALUES (?, ?, ?)",
            [(run_id, int(s), _num(v)) for s, v in losses],
        )
        now = time.time()
        conn.execute(
            "UPDATE runs SET status='done', finished=?, seconds=? - started, error=NULL WHERE run_id=?",
            (now, now, run_id),
        )


def write_eval_rows(db: str | Path, run_id: str, rows: list[MetricRow]) -> None:
    """Store evaluation rows {task, metric, value, stderr, higher_is_better} for `run_id` (used by `witune eval
    --db`); rows of the same task and metric replace earlier ones. An unknown run id gets a minimal run row."""
    with transaction(db) as conn:
        conn.execute(
            "INSERT OR IGNORE INTO runs (run_id, point, status) VALUES (?, ?, 'done')",
            (run_id, json.dumps({"run_id": run_id, "train": {}, "labels": {}, "eval": {}})),
        )
        _write_metrics(conn, run_id, rows)


def _write_metrics(conn: sqlite3.Connection, run_id: str, rows: list[MetricRow]) -> None:
    _write_structure(conn, run_id, rows)
    conn.executemany(
        "INSERT OR REPLACE INTO metrics (run_id, task, metric, value, stderr, higher_is_better) VALUES (?,?,?,?,?,?)",
        [
            (
                run_id,
                str(r["task"]),
                str(r["metric"]),
                _num(r["value"]),
                _num(r.get("stderr")),
                int(bool(r.get("higher_is_better", True))),
            )
            for r in rows
        ],
    )


def _write_structure(conn: sqlite3.Connection, run_id: str, rows: list[MetricRow]) -> None:
    """lm-eval's group structure of the evaluated tasks (rows that carry it), one row per task."""
    seen: dict[str, tuple] = {}
    for r in rows:
        if any(k in r for k in ("parent", "n_items", "weight_by_size")):
            wbs = r.get("weight_by_size")
            seen[str(r["task"])] = (r.get("parent"), r.get("n_items"), None if wbs is None else int(bool(wbs)))
    conn.executemany(
        "INSERT OR REPLACE INTO task_structure (run_id, task, parent, n_items, weight_by_size) VALUES (?,?,?,?,?)",
        [(run_id, task, *values) for task, values in seen.items()],
    )


def _structure(conn: sqlite3.Connection) -> dict[tuple[str, str], dict[str, Any]]:
    """(run_id, task) -> {parent, n_items, weight_by_size}; empty for a database written before the table."""
    try:
        rows = conn.execute("SELECT run_id, task, parent, n_items, weight_by_size FROM task_structure").fetchall()
    except sqlite3.OperationalError:
        return {}
    return {
        (r[0], r[1]): {"parent": r[2] or "", "n_items": r[3], "weight_by_size": None if r[4] is None else bool(r[4])}
        for r in rows
    }


def _num(x: Any) -> float | None:
    """NaN and None are stored as NULL (SQLite has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def runs(path: str | Path) -> list[dict[str, Any]]:
    """Every run as a dict (point parsed), in insertion order."""
    with connect(path) as conn:
        out = []
        for r in conn.execute("SELECT * FROM runs ORDER BY rowid"):
            d = dict(r)
            d["point"] = json.loads(d["point"])
            out.append(d)
        return out


def metrics(path: str | Path, run_id: str | None = None) -> list[dict[str, Any]]:
    with connect(path) as conn:
        q, args = ("SELECT * FROM metrics WHERE run_id=?", (run_id,)) if run_id else ("SELECT * FROM metrics", ())
        return [dict(r) for r in conn.execute(q + " ORDER BY run_id, task, metric", args)]


def _require(folder: str | Path) -> Path:
    p = db_path(folder)
    if not p.is_file():
        from witune.errors import ConfigError

        raise ConfigError(f"{folder}: not a sweep folder (no {DB_NAME} in it)")
    return p


def results_frame(folder: str | Path, stage: str = "sft"):
    """Finished runs as the analysis table: one row per run x benchmark x metric, with the columns
    run_id, model, dataset, prompt_weight, response_weight, normalization, seed, benchmark, metric, score,
    higher_is_better, plus the per-run diagnostics weight_distance, memorization_bleu, generation_length and the
    training data's ``rg`` (NaN where not measured), and each score's ``stderr`` (NaN where the evaluation gave none). Diagnostics are columns, not benchmark rows, so they never
    enter an aggregate. `stage`: "sft" (the trained point) or "dpo" (the point's DPO stage, when the sweep chains
    one); a `stage` column says which."""
    import pandas as pd

    p = _require(folder)
    done = {r["run_id"]: r["point"].get("labels", {}) for r in runs(p) if r["status"] == "done"}
    diag: dict[str, dict[str, float]] = {rid: {} for rid in done}
    rows = []
    for m in metrics(p):
        if m["run_id"] not in done or m["metric"] in _NOT_SCORES or m["value"] is None:
            continue
        row_stage, task = (
            ("dpo", m["task"][len(STAGE_PREFIX) :]) if m["task"].startswith(STAGE_PREFIX) else ("sft", m["task"])
        )
        if row_stage != stage:
            continue
        m = {**m, "task": task, "_stored_task": m["task"]}
        column = _diagnostic_column(m["task"], m["metric"])
        if column:
            diag[m["run_id"]][column] = m["value"]
            continue
        if any(task == t or task.startswith(t + "=") for t in _DIAGNOSTIC_TASKS):
            continue
        labels = done[m["run_id"]]
        rows.append(
            {
                "run_id": m["run_id"],
                "model": labels.get("model", ""),
                "dataset": labels.get("dataset", ""),
                "prompt_weight": labels.get("prompt_weight"),
                "response_weight": labels.get("response_weight"),
                "normalization": labels.get("normalization", ""),
                "seed": labels.get("seed"),
                "benchmark": _benchmark(m["task"]),
                "metric": m["metric"],
                "score": m["value"],
                "higher_is_better": bool(m["higher_is_better"]),
                "stderr": math.nan if m.get("stderr") is None else m["stderr"],
                "_task": m["_stored_task"],
            }
        )
    with connect(p) as conn:
        structure = _structure(conn)
    if structure:  # lm-eval's group structure, per row (witune.analysis.groups reads it)
        for row in rows:
            info = structure.get((row["run_id"], row.pop("_task")), {})
            row.update({"parent": info.get("parent", ""), "n_items": info.get("n_items")})
            row["weight_by_size"] = info.get("weight_by_size")
    else:
        for row in rows:
            row.pop("_task")
    extra = ["parent", "n_items", "weight_by_size"] if structure else []
    frame = pd.DataFrame(rows, columns=[*REQUIRED, "stderr", *extra])
    for col in sorted(set(RUN_COLUMNS.values())):
        frame[col] = [diag.get(rid, {}).get(col, math.nan) for rid in frame["run_id"]]
    frame["stage"] = stage
    return frame


def _diagnostic_column(task: str, metric: str) -> str | None:
    for (prefix, name), column in RUN_COLUMNS.items():
        if metric == name and (task == prefix or task.startswith(prefix + "=")):
            return column
    return None


def _benchmark(task: str) -> str:
    """`witune_arc_challenge` -> `arc_challenge`: the local harness copies are the standard benchmarks."""
    return task[len("witune_") :] if task.startswith("witune_") else task


def losses_frame(folder: str | Path):
    """Training losses of finished runs: columns run_id, step, loss."""
    import pandas as pd

    p = _require(folder)
    with connect(p) as conn:
        rows = conn.execute(
            "SELECT l.run_id, l.step, l.loss FROM losses l JOIN runs r ON r.run_id = l.run_id "
            "WHERE r.status = 'done' AND l.loss IS NOT NULL ORDER BY l.run_id, l.step"
        ).fetchall()
    return pd.DataFrame([tuple(r) for r in rows], columns=["run_id", "step", "loss"])
