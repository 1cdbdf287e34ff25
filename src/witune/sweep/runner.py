"""Run one sweep point: train (a `witune train --resume` subprocess), measure, evaluate, record.

Training runs in its own process so that a crash, an out-of-memory kill or a SIGKILL of the sweep never
leaves a half-initialised model in a long-lived worker, and so that `--resume` continues an interrupted point
from its newest checkpoint. A `.trained` marker written after a successful training lets a point whose
evaluation was interrupted skip straight to evaluation on the next attempt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from witune.atomic import atomic_write_text
from witune.sweep import db
from witune.sweep.grid import Point

if TYPE_CHECKING:  # a type only: importing witune.eval at run time would load the evaluation code
    from witune.eval.rows import MetricRow

TRAINED_MARKER = ".trained"


class PointError(RuntimeError):
    """A point that cannot finish; the message is what the database and `witune sweep status` show."""


@dataclass
class PointResult:
    rows: list[MetricRow] = field(default_factory=list)  # evaluation rows + diagnostics
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) from metrics.jsonl


def run_dir(sweep_dir: str | Path, run_id: str) -> Path:
    return Path(sweep_dir) / "runs" / run_id


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies, so that killing a sweep (even with
    SIGKILL) takes its workers and their trainings down instead of leaving orphans that write to the
    database while a resumed sweep runs the same points. No-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before the call: follow it now
            os._exit(137)
    except OSError:
        pass


def run_logged(cmd: list[str], log_file: Path) -> int:
    """Run a witune command in a child process (dying with this one), its output appended to `log_file` after a
    `=== time command` line: one per attempt, so that `_last_error` reads the newest attempt only. The exit code."""
    with open(log_file, "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        log.flush()
        return subprocess.call(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_child_env(),
            preexec_fn=die_with_parent if os.name == "posix" else None,
        )


def train_point(point: Point, out: Path) -> None:
    """Train (or continue training) the point in `out`; raises PointError with the trainer's own message."""
    from witune.train.config import to_yaml

    out.mkdir(parents=True, exist_ok=True)
    cfg = point.train_config(out)
    cfg.progress = False  # a progress bar in a log file is noise; the sweep shows its own progress
    cfg_file = out / "train.yaml"
    atomic_write_text(cfg_file, to_yaml(cfg))
    log_file = out / "train.log"
    # `python -m witune.cli.train` is the same command as `witune train` (and what `accelerate launch` runs).
    code = run_logged([sys.executable, "-m", "witune.cli.train", str(cfg_file), "--resume"], log_file)
    if code != 0:
        raise PointError(f"training exited with code {code}: {_last_error(log_file)} (log: {log_file})")
    atomic_write_text(out / TRAINED_MARKER, time.strftime("%Y-%m-%d %H:%M:%S\n"))


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Several trainings share the machine: without a cap, each would start one thread per core.
    threads = os.environ.get("WITUNE_SWEEP_THREADS")
    if threads:
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return env


def _last_error(log_file: Path) -> str:
    """The trainer's one-line error if it printed one, else the last line of its output."""
    lines = [ln.strip() for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()]
    starts = [i for i, ln in enumerate(lines) if ln.startswith("=== ")]
    lines = lines[starts[-1] + 1 :] if starts else lines  # this attempt only
    for ln in reversed(lines):
        if ln.startswith("error:") or "Error:" in ln:
            return ln
    return lines[-1] if lines else "no output"


def data_rg(train: dict, tokenizer_dir: Path) -> float:
    """Rg (ratio of means: completion tokens / prompt tokens) of the data this point trained on, counted with the
    tokenizer of the trained model (``witune.stats``, as `witune stats` reports it), over the records trained on."""
    from witune.data import load_examples
    from witune.stats import ratio_stats, sample_lengths
    from witune.stats.loading import get_tokenizer

    examples = load_examples(train["data"], format=train.get("format", "auto"), limit=train.get("limit")).examples
    return ratio_stats(sample_lengths(examples, get_tokenizer(str(tokenizer_dir)))).ratio_of_means


def read_losses(metrics_file: Path) -> list[tuple[int, float]]:
    if not metrics_file.is_file():
        return []
    out = []
    for line in metrics_file.read_text().splitlines():
        if line.strip():
            m = json.loads(line)
            out.append((int(m["step"]), float(m["loss"])))
    return out


def eval_tasks(point: Point) -> list[str]:
    """The point's evaluation tasks; a bare `witune:memorization` means "on this point's training data"."""
    return [
        f"witune:memorization={point.train['data']}" if t == "witune:memorization" else t
        for t in point.eval.get("tasks", [])
    ]


_DATA_SUFFIXES = {".json", ".jsonl", ".csv", ".parquet"}


def check_data(data: str) -> None:
    """Fail a point whose training file is missing at once, instead of after a trainer has started."""
    p = Path(data).expanduser()
    if p.suffix in _DATA_SUFFIXES and not p.exists():
        raise PointError(f"training data file not found: {data}")


def execute_point(point: Point, out: Path) -> PointResult:
    """Train, then measure and evaluate the trained model. Touches no database (Ray runs this remotely)."""
    check_data(str(point.train.get("data", "")))
    if not (out / TRAINED_MARKER).is_file() or not (out / "model").is_dir():
        train_point(point, out)
    model_dir = out / "model"
    result = PointResult(losses=read_losses(out / "metrics.jsonl"))
    ev = point.eval
    full_model = int(point.train.get("lora_r", 0)) == 0 or bool(point.train.get("merge_lora", True))
    if ev.get("weight_distance", True) and full_model:  # an unmerged adapter folder is not a full model
        from witune.models.distance import weight_distance

        try:
            dist = weight_distance(point.train["model"], model_dir)
            result.rows.append(
                {"task": "weight_distance", "metric": "l2", "value": dist, "stderr": None, "higher_is_better": False}
            )
        except (OSError, ValueError, RuntimeError) as e:  # a diagnostic: its failure must not fail the point
            print(f"weight distance skipped for {point.run_id}: {e}", file=sys.stderr)
    try:  # the per-dataset Rg that the GAM and the correlations need: a column, never a score
        result.rows.append(
            {
                "task": "witune:data_rg",
                "metric": "ratio_of_means",
                "value": data_rg(point.train, model_dir),
                "stderr": None,
                "higher_is_better": True,
            }
        )
    except (OSError, ValueError, RuntimeError) as e:  # bookkeeping: its failure must not fail the point
        print(f"Rg skipped for {point.run_id}: {e}", file=sys.stderr)
    tasks = eval_tasks(point)
    if tasks:
        from witune.eval import EvalOptions, evaluate

        opts = EvalOptions(
            max_new_tokens=ev.get("max_new_tokens", 256),
            batch_size=ev.get("batch_size", 8),
            seed=int(point.train.get("seed", 0)),
        )
        try:
            rows = evaluate(
                str(model_dir),
                tasks,
                limit=ev.get("limit"),
                num_fewshot=ev.get("num_fewshot"),
                options=opts,
                device=ev.get("device", "cpu"),
                data_dir=ev.get("data_dir"),
            )
        except Exception as e:  # noqa: BLE001 - any evaluation failure is recorded on the point
            raise PointError(f"evaluation failed: {type(e).__name__}: {_one_line(e)}") from e
        result.rows += rows
    if point.dpo:  # second stage: DPO on this SFT model, evaluated the same way (rows prefixed "dpo:")
        from witune.sweep.dpo_stage import dpo_rows

        result.rows += dpo_rows(point, out)
    atomic_write_text(out / "results.json", json.dumps({"run_id": point.run_id, "results": result.rows}, indent=1))
    return result


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else repr(e)


@contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so that what libraries and C code
    write goes there too) to `path` for the duration; a worker process runs one point at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(path, "a") as f:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def run_point(sweep_dir: str | Path, run_id: str) -> str:
    """Run one point recorded in the sweep database and record its outcome; returns 'done' or 'failed'.
    Never raises for a failing point: the error text goes into the database and the other points go on."""
    sweep_dir = Path(sweep_dir)
    rows = [r for r in db.runs(sweep_dir) if r["run_id"] == run_id]
    if not rows:
        raise KeyError(f"run {run_id} is not in {db.db_path(sweep_dir)}")
    point = Point.from_json(json.dumps(rows[0]["point"]))
    db.mark_running(sweep_dir, run_id)
    out = run_dir(sweep_dir, run_id)
    try:
        with output_to(out / "eval.log"):  # harness logs and progress bars would garble the sweep's own
            result = execute_point(point, out)
    except Exception as e:  # noqa: BLE001 - recorded, never propagated
        db.mark_failed(sweep_dir, run_id, str(e) if isinstance(e, PointError) else f"{type(e).__name__}: {e}")
        return "failed"
    db.finish_run(sweep_dir, run_id, result.rows, result.losses)
    return "done"
