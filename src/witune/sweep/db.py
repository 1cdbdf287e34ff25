"""The sweep database: one SQLite file (`<sweep folder>/sweep.db`, WAL mode), stdlib `sqlite3` only.

Tables::

    runs(run_id PK, point JSON, status, started, finished, seconds, error, attempts)
    results(run_id, stage, task, metric, value, stderr, higher_is_better, role, run_column,
            PRIMARY KEY(run_id, stage, task, metric))        -- `witune.results_schema.ResultRow`s
    losses(run_id, step, loss, PRIMARY KEY(run_id, step))
    task_structure(run_id, task, parent, n_items, weight_by_size, PRIMARY KEY(run_id, task))  (lm-eval's groups)
    rungs(run_id, rung, steps, score, tokens, decision, PRIMARY KEY(run_id, rung))  (successive halving)

Every write is one transaction and result/loss rows are `INSERT OR REPLACE`d on their keys, so a point that is
re-run (after a kill) replaces its rows instead of adding a second copy. Status: pending -> running -> done |
failed; a `running` row left by a killed sweep is simply run again by `--resume`. Successive halving adds
`stopped`: a point that trained some rungs and was not promoted (its checkpoint stays; a later grid sweep over the
folder continues it to the end). A table is created when a database lacking it is opened: older folders gain
the `rungs` table (empty) the first time they are opened, their rows unchanged.

Sweep folders written before the `results` table hold their rows in `metrics(run_id, task, metric, value,
stderr, higher_is_better)`, DPO-stage tasks prefixed `dpo:`: that table is read too, each row as it meant
(`witune.sweep.rows.legacy_row`), and never written again.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from witune.results_schema import STAGES, Labels, ResultRow, results_table
from witune.sweep.rows import declared_columns, legacy_row, tag_rows

DB_NAME = "sweep.db"
LOCK_NAME = ".lock"  # held (flock) by the `witune sweep` process running in the folder, for its whole life
STATUSES = ("pending", "running", "done", "failed", "stopped")
DECISIONS = ("promoted", "stopped", "final")  # a rung's outcome; NULL until the rung's ranking is made

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, point TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
    started REAL, finished REAL, seconds REAL, error TEXT, attempts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL, stage TEXT NOT NULL, task TEXT NOT NULL, metric TEXT NOT NULL, value REAL, stderr REAL,
    higher_is_better INTEGER NOT NULL, role TEXT NOT NULL, run_column TEXT,
    PRIMARY KEY (run_id, stage, task, metric));
CREATE TABLE IF NOT EXISTS losses (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, loss REAL, PRIMARY KEY (run_id, step));
CREATE TABLE IF NOT EXISTS task_structure (
    run_id TEXT NOT NULL, task TEXT NOT NULL, parent TEXT, n_items INTEGER, weight_by_size INTEGER,
    PRIMARY KEY (run_id, task));
CREATE TABLE IF NOT EXISTS rungs (
    run_id TEXT NOT NULL, rung INTEGER NOT NULL, steps INTEGER NOT NULL, score REAL, tokens REAL, decision TEXT,
    PRIMARY KEY (run_id, rung));
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
            conn.execute("PRAGMA busy_timeout=60000")
            _check_schema(conn, p, require=False)  # never add witune's tables to another program's database
            conn.execute("PRAGMA journal_mode=WAL")
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


def _unusable(path: Path, err: sqlite3.Error | str):
    """One line: SQLite's integrity check reports up to 100 problems, one per line; the first few are named."""
    from witune.errors import ConfigError

    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and not ln.startswith("***")]
    shown = "; ".join(lines[:3]) + (f"; and {len(lines) - 3} more problems" if len(lines) > 3 else "")
    return ConfigError(f"{path}: not a usable witune sweep database ({shown})")


# The columns each witune table must have (a database that lacks one is another program's, or damaged).
_COLUMNS = {
    "runs": {"run_id", "point", "status", "started", "finished", "seconds", "error", "attempts"},
    "results": {"run_id", "stage", "task", "metric", "value", "stderr", "higher_is_better", "role", "run_column"},
    "losses": {"run_id", "step", "loss"},
    "rungs": {"run_id", "rung", "steps", "score", "tokens", "decision"},
}


def _check_schema(conn: sqlite3.Connection, p: Path, require: bool) -> None:
    """Refuse a database that is not a witune sweep's: another program's tables, or witune's tables without
    their columns. `require`: the tables must be there (a reader); else an empty file is fine (a new sweep)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables and not require:
        return
    if "runs" not in tables:
        what = "an empty database" if not tables else f"other tables ({', '.join(sorted(tables)[:5])})"
        raise _unusable(p, f"{what}, no witune runs table")
    for table, columns in _COLUMNS.items():
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if table in tables and not columns <= have:
            raise _unusable(p, f"table {table} lacks columns {', '.join(sorted(columns - have))}")
    _check_stopped(conn, p, "rungs" in tables)


def _check_stopped(conn: sqlite3.Connection, p: Path, has_rungs: bool) -> None:
    """A point successive halving stopped must have the rung that stopped it. Without it (the `rungs` table
    dropped or emptied) a resume would retrain stopped points and could promote one the search eliminated;
    checked before `connect` creates a missing table, so a dropped table is never silently replaced."""
    query = "SELECT run_id FROM runs WHERE status = 'stopped'"
    if has_rungs:
        query += " AND run_id NOT IN (SELECT run_id FROM rungs WHERE decision = 'stopped')"
    lost = conn.execute(query + " LIMIT 1").fetchone()
    if lost is not None:
        where = "the rungs table is missing" if not has_rungs else "the rungs table has no such rung"
        raise _unusable(p, f"run {lost[0]!r} was stopped by successive halving, but {where}")


def _check_numbers(p: Path, row: sqlite3.Row, columns: tuple[str, ...], what: str) -> None:
    """Values SQLite stores as text (or blobs) in a numeric column: a damaged or hand-edited database."""
    for col in columns:
        v = row[col]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise _unusable(p, f"run {row['run_id']!r}, {what}: {col} {v!r} is not a number")


@contextmanager
def reading(path: str | Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection for what only reads (status, analyze, report): it never creates tables in a file
    that is not witune's, checks integrity and schema first, and works in a folder without write permission
    (an archived sweep; WAL mode needs write access for its shared-memory file, so there it opens immutable)."""
    p = _require(path)
    uri = p.resolve().as_uri()
    try:
        try:
            conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=60)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            conn = sqlite3.connect(f"{uri}?immutable=1", uri=True)
        verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise _unusable(p, verdict)
        _check_schema(conn, p, require=True)
    except sqlite3.DatabaseError as e:
        raise _unusable(p, e) from None
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    except sqlite3.DatabaseError as e:
        raise _unusable(p, e) from None
    finally:
        conn.close()


def check_run(path: str | Path, run_id: str) -> Path:
    """The database `witune eval --db PATH --run-id ID` writes into, checked before the evaluation runs (not when
    its results are to be written): the same checks as `witune sweep status` (an existing witune sweep
    database, intact, its values readable), and `run_id` must be one of its runs. Returns the database file."""
    p = _require(path)
    ids = [r["run_id"] for r in runs(p)]
    if run_id not in ids:
        from witune.errors import ConfigError

        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        raise ConfigError(f"{p}: no run {run_id!r} in this sweep ({len(ids)} runs: {shown or 'none'})")
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


Rows = Iterable[ResultRow | Mapping[str, Any]]  # result rows, or evaluation rows (tagged as stage "sft")


def finish_run(path: str | Path, run_id: str, rows: Rows, losses: list[tuple[int, float]]) -> None:
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


def record_rung(path: str | Path, run_id: str, rung: int, steps: int, score: float, tokens: float) -> None:
    """A point's held-out score after `rung` (trained to `steps`); the point waits (pending) for the ranking."""
    with transaction(path) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO rungs (run_id, rung, steps, score, tokens, decision) VALUES (?,?,?,?,?,NULL)",
            (run_id, rung, steps, _num(score), _num(tokens)),
        )
        conn.execute("UPDATE runs SET status='pending' WHERE run_id=? AND status='running'", (run_id,))


def decide_rung(path: str | Path, rung: int, decisions: Mapping[str, str]) -> None:
    """Record each point's outcome of `rung` (`DECISIONS`); a stopped point's status becomes 'stopped'."""
    with transaction(path) as conn:
        for run_id, decision in decisions.items():
            assert decision in DECISIONS, decision
            conn.execute("UPDATE rungs SET decision=? WHERE run_id=? AND rung=?", (decision, run_id, rung))
            if decision == "stopped":
                now = time.time()
                conn.execute("UPDATE runs SET status='stopped', finished=?, error=NULL WHERE run_id=?", (now, run_id))


def rungs(path: str | Path) -> list[dict[str, Any]]:
    """Every recorded rung: run_id, rung, steps, score, tokens, decision; by run and rung (none in a database
    from before successive halving)."""
    with reading(path) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='rungs'").fetchone():
            return []
        out = []
        for r in conn.execute("SELECT * FROM rungs ORDER BY run_id, rung"):
            _check_numbers(db_path(path), r, ("score", "tokens"), f"rung {r['rung']!r}")
            if not all(isinstance(r[c], int) for c in ("rung", "steps")) or r["decision"] not in (*DECISIONS, None):
                raise _unusable(db_path(path), f"run {r['run_id']!r}, rung {r['rung']!r}: not a rung witune wrote")
            out.append(dict(r))
        return out


def write_eval_rows(db: str | Path, run_id: str, rows: Rows, *, new_run: bool = False) -> None:
    """Store evaluation rows {task, metric, value, stderr, higher_is_better} for `run_id` (used by `witune eval
    --db`); rows of the same task and metric replace earlier ones. The run must exist (a run id the sweep does
    not hold would otherwise become a phantom finished point); `new_run` adds a minimal run row for one that
    does not (tests building a database)."""
    with transaction(db) as conn:
        if new_run:
            conn.execute(
                "INSERT OR IGNORE INTO runs (run_id, point, status) VALUES (?, ?, 'done')",
                (run_id, json.dumps({"run_id": run_id, "train": {}, "labels": {}, "eval": {}})),
            )
        elif conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
            from witune.errors import ConfigError

            raise ConfigError(f"{db_path(db)}: no run {run_id!r} in this sweep")
        _write_metrics(conn, run_id, rows)


def _write_metrics(conn: sqlite3.Connection, run_id: str, rows: Rows) -> None:
    tagged = tag_rows(rows)
    _write_structure(conn, run_id, tagged)
    conn.executemany(
        "INSERT OR REPLACE INTO results (run_id, stage, task, metric, value, stderr, higher_is_better, role, "
        "run_column) VALUES (?,?,?,?,?,?,?,?,?)",
        [
            (
                run_id,
                r.stage,
                r.task,
                r.metric,
                _num(r.value),
                _num(r.stderr),
                int(r.higher_is_better),
                r.role,
                r.column,
            )
            for r in tagged
        ],
    )


def _write_structure(conn: sqlite3.Connection, run_id: str, rows: list[ResultRow]) -> None:
    """lm-eval's group structure of the evaluated tasks (rows that carry it), one row per task."""
    seen = {
        r.task: (r.parent, r.n_items, None if r.weight_by_size is None else int(r.weight_by_size))
        for r in rows
        if r.parent is not None or r.n_items is not None or r.weight_by_size is not None
    }
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
        (r[0], r[1]): {"parent": r[2], "n_items": r[3], "weight_by_size": None if r[4] is None else bool(r[4])}
        for r in rows
    }


def _num(x: Any) -> float | None:
    """NaN and None are stored as NULL (SQLite has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def runs(path: str | Path) -> list[dict[str, Any]]:
    """Every run as a dict (point parsed), in insertion order. A point that is not a JSON object, or a status
    witune never writes, is one line naming the run (a damaged database)."""
    with reading(path) as conn:
        out = []
        for r in conn.execute("SELECT * FROM runs ORDER BY rowid"):
            d = dict(r)
            try:
                d["point"] = json.loads(d["point"])
            except (TypeError, ValueError):
                d["point"] = None
            if not isinstance(d["point"], dict) or d["status"] not in STATUSES:
                what = "its point is not a JSON object" if not isinstance(d["point"], dict) else "unknown status"
                raise _unusable(db_path(path), f"run {d['run_id']!r}: {what}")
            out.append(d)
        return out


def result_rows(path: str | Path, run_id: str | None = None) -> list[tuple[str, ResultRow]]:
    """(run_id, row) of every stored result, ordered by run, stage, task and metric; the rows of an older
    sweep folder's `metrics` table too (a row stored in both: the newer one)."""
    where, args = ("WHERE run_id=?", (run_id,)) if run_id else ("", ())
    out: dict[tuple[str, str, str, str], tuple[str, ResultRow]] = {}
    with reading(path) as conn:
        legacy = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='metrics'").fetchone()
        if legacy:
            for m in conn.execute(f"SELECT * FROM metrics {where}", args):
                row = legacy_row(dict(m))
                out[(m["run_id"], row.stage, row.task, row.metric)] = (m["run_id"], row)
        structure = _structure(conn)
        has_results = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='results'").fetchone()
        for m in conn.execute(f"SELECT * FROM results {where}", args) if has_results else ():
            _check_numbers(db_path(path), m, ("value", "stderr"), f"{m['task']} {m['metric']}")
            fields = {k: m[k] for k in ("task", "metric", "value", "stderr", "stage", "role")}
            info = structure.get((m["run_id"], m["task"]), {})
            row = ResultRow(**fields, higher_is_better=bool(m["higher_is_better"]), column=m["run_column"], **info)
            out[(m["run_id"], row.stage, row.task, row.metric)] = (m["run_id"], row)
    return [out[k] for k in sorted(out)]


def metrics(path: str | Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """`result_rows` as dicts: run_id, task, metric, value, stderr, higher_is_better, stage, role, column."""
    return [{"run_id": rid, **asdict(row)} for rid, row in result_rows(path, run_id)]


def sweep_is_live(folder: str | Path) -> bool:
    """Whether a `witune sweep` process holds the folder's lock now. The kernel drops a flock when its process
    dies, even by SIGKILL: a `running` point of a folder nobody holds was interrupted, not running."""
    import fcntl
    import os

    lock = db_path(folder).parent / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the shared lock taken just to look
    return False


def point_status(run: Mapping[str, Any], live: bool) -> str:
    """A run's status as it is now: `running` in the database but no live sweep is "interrupted" (killed)."""
    return "interrupted" if run["status"] == "running" and not live else run["status"]


def point_counts(folder: str | Path) -> dict[str, int]:
    """How many points are done, pending, running (a live sweep holds the lock), interrupted (marked running,
    but the sweep that ran them is gone), failed, and stopped early by successive halving."""
    live = sweep_is_live(folder)
    counts = dict.fromkeys(("done", "pending", "running", "interrupted", "failed", "stopped"), 0)
    for r in runs(folder):
        counts[point_status(r, live)] += 1
    return counts


def progress_note(folder: str | Path) -> str | None:
    """One line for a sweep that is not complete (None when every point is done, or stopped by successive
    halving, which `halving_note` reports): what the analysis rests on."""
    counts = point_counts(folder)
    total = sum(counts.values())
    if counts["done"] + counts["stopped"] == total:
        return None
    rest = ", ".join(f"{n} {s}" for s, n in counts.items() if n and s != "done")
    return f"sweep incomplete: {counts['done']} of {total} points done ({rest}); only the done points are analysed"


def _require(folder: str | Path) -> Path:
    p = db_path(folder)
    if not p.is_file():
        from witune.errors import ConfigError

        raise ConfigError(f"{folder}: not a sweep folder (no {DB_NAME} in it)")
    return p


def results_frame(folder: str | Path, stage: str = "sft"):
    """Finished runs as the analysis table (`witune.results_schema.results_table`): one row per run x
    benchmark x metric with the design columns, per-run diagnostic columns (weight_distance, memorization_bleu,
    generation_length, the training data's ``rg``, ...: NaN where not measured) and each score's ``stderr``.
    Diagnostics declared with a column are columns, not benchmark rows, so they never enter an aggregate.
    `stage`: "sft" (the trained point) or "dpo" (the point's DPO stage, when the sweep chains one)."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    p = _require(folder)
    done = {r["run_id"]: Labels.from_dict(r["point"].get("labels", {})) for r in runs(p) if r["status"] == "done"}
    rows: dict[str, list[ResultRow]] = {rid: [] for rid in done}
    for rid, row in result_rows(p):
        if rid in rows:
            rows[rid].append(row)
    return results_table(((rid, done[rid], rows[rid]) for rid in sorted(done)), stage, declared_columns())


def stopped_points(folder: str | Path) -> int:
    """Points that successive halving stopped at an early rung: out of `results_frame` and `losses_frame` (only
    finished runs are read), since a run stopped part-way is not comparable with one trained to the end."""
    return sum(r["status"] == "stopped" for r in runs(_require(folder)))


def losses_frame(folder: str | Path):
    """Training losses of finished runs: columns run_id, step, loss."""
    import pandas as pd

    p = _require(folder)
    with reading(p) as conn:
        rows = conn.execute(
            "SELECT l.run_id, l.step, l.loss FROM losses l JOIN runs r ON r.run_id = l.run_id "
            "WHERE r.status = 'done' AND l.loss IS NOT NULL ORDER BY l.run_id, l.step"
        ).fetchall()
        for r in rows:
            _check_numbers(p, r, ("step", "loss"), "losses")
    return pd.DataFrame([tuple(r) for r in rows], columns=["run_id", "step", "loss"])
