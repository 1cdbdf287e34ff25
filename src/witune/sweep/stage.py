"""One stage of a sweep point (its SFT training, or the DPO run chained after it): train it in its own
`--resume` subprocess, then evaluate the model it wrote with the point's `EvalSpec`.

Training runs in its own process so that a crash, an out-of-memory kill or a SIGKILL of the sweep never
leaves a half-initialised model in a long-lived worker, and so that `--resume` continues an interrupted stage
from its newest checkpoint. A `.trained` marker written after a successful training lets a stage whose
evaluation was interrupted skip straight to evaluation on the next attempt.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from witune.atomic import atomic_write_text
from witune.results_schema import ResultRow
from witune.sweep.point import Point
from witune.sweep.rows import tag_rows

TRAINED_MARKER = ".trained"


class PointError(RuntimeError):
    """A point that cannot finish; the message is what the database and `witune sweep status` show."""


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
    `=== time command` line: one per attempt, so that `last_error` reads the newest attempt only. The exit code."""
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


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Several trainings share the machine: without a cap, each would start one thread per core.
    threads = os.environ.get("WITUNE_SWEEP_THREADS")
    if threads:
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return env


def last_error(log_file: Path) -> str:
    """The trainer's one-line error if it printed one, else the last line of its output."""
    lines = [ln.strip() for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()]
    starts = [i for i, ln in enumerate(lines) if ln.startswith("=== ")]
    lines = lines[starts[-1] + 1 :] if starts else lines  # this attempt only
    for ln in reversed(lines):
        if ln.startswith("error:") or "Error:" in ln:
            return ln
    return lines[-1] if lines else "no output"


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else repr(e)


# stage -> (the `python -m witune.cli.<command>` that trains it, its name in errors, its folder in the point's)
_TRAINERS = {"sft": ("train", "training", "."), "dpo": ("dpo", "DPO", "dpo")}


def train_stage(stage: str, config: Any, out: Path, finished: bool = True) -> Path:
    """Train (or continue) a stage of the point in `out` with `python -m witune.cli.<command> <command>.yaml
    --resume` (its log: `<command>.log`); skipped when it finished before. The stage's model folder.
    `finished=False`: the training stops part-way (a rung of successive halving), so it is not marked finished."""
    command, what, sub = _TRAINERS[stage]
    folder = out / sub
    if (folder / TRAINED_MARKER).is_file() and (folder / "model").is_dir():
        return folder / "model"
    folder.mkdir(parents=True, exist_ok=True)
    config.progress = False  # a progress bar in a log file is noise; the sweep shows its own progress
    config_file, log_file = out / f"{command}.yaml", out / f"{command}.log"
    atomic_write_text(config_file, config.to_yaml())
    # `python -m witune.cli.train` is the same command as `witune train` (and what `accelerate launch` runs).
    code = run_logged([sys.executable, "-m", f"witune.cli.{command}", str(config_file), "--resume"], log_file)
    if code != 0:
        raise PointError(f"{what} exited with code {code}: {last_error(log_file)} (log: {log_file})")
    if finished:
        atomic_write_text(folder / TRAINED_MARKER, time.strftime("%Y-%m-%d %H:%M:%S\n"))
    return folder / "model"


def evaluate_stage(point: Point, model_dir: Path, stage: str) -> list[ResultRow]:
    """The point's evaluation tasks on one stage's model, as result rows of that stage."""
    spec = point.eval
    tasks = spec.task_names(point.train.data)
    if not tasks:
        return []
    from witune.eval import EvalOptions, evaluate

    options = EvalOptions(max_new_tokens=spec.max_new_tokens, batch_size=spec.batch_size, seed=point.train.seed)
    try:
        rows = evaluate(
            str(model_dir),
            tasks,
            limit=spec.limit,
            num_fewshot=spec.num_fewshot,
            options=options,
            device=spec.device,
            data_dir=spec.data_dir,
        )
    except Exception as e:  # noqa: BLE001 - any evaluation failure is recorded on the point
        after = " after DPO" if stage == "dpo" else ""
        raise PointError(f"evaluation{after} failed: {type(e).__name__}: {one_line(e)}") from e
    return tag_rows(rows, stage)
