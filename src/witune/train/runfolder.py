"""Protected run folders: a training never mixes into another run's folder, and a resume continues only the run
it belongs to.

* A non-empty `output_dir` needs `--resume` (continue its run) or `--overwrite` (replace it, old checkpoints
  included, so that a later `--resume` can never continue from a foreign run's checkpoint).
* `--overwrite` clears the old run only once data and model have loaded: a run that fails early (missing data,
  a typo in the model name) leaves the old run as it was.
* A resume compares the checkpoint's settings (stored in its `trainer_state.json`) with the new ones. Loss,
  data and schedule settings must match, and so must the data itself (a hash of the token rows) and the global
  batch; the refusal names every differing field. A different length (`max_steps`, `epochs`) is intended: the
  learning-rate schedule is recomputed for the new length and the run continues on it (said in one line).
"""

from __future__ import annotations

import hashlib
import shutil
from array import array
from pathlib import Path
from typing import Any

from witune.errors import ConfigError
from witune.flat_config import FlatConfig
from witune.train.checkpoint import CheckpointState
from witune.train.config import TrainConfig, config_dict, load_config

# What a run writes into its folder (all that --overwrite removes; anything else there is left alone).
RUN_ENTRIES = ("config.yaml", "metrics.jsonl", "model", "checkpoints")
# Settings that may differ on resume: where and how the run is executed, logged and saved; none changes the
# loss, the data order or the optimiser's trajectory in meaning.
RUNTIME_KEYS = frozenset(
    {
        "output_dir",
        "save_every",
        "save_total_limit",
        "log_every",
        "report_to",
        "progress",
        "data_workers",
        "data_cache",
        "precision",
        "gradient_checkpointing",
        "deterministic",
        "chunked_loss",
        "merge_lora",
        "preset",
        "stop_at_step",  # where this call stops, not what the run is: the schedule is the whole run's
    }
)
# The run's length: a change is intended (train longer) and handled by recomputing the schedule.
LENGTH_KEYS = frozenset({"max_steps", "epochs"})


def check_run_folder(out: Path, resume: bool, overwrite: bool, inputs: tuple[str | None, ...] = ()) -> None:
    """Before any work: refuse to train into a folder that holds something, unless told what to do with it; and,
    whatever the flags say, into an input (the model, tokenizer or data folder: `witune.atomic.check_output`),
    or with --overwrite over a folder that holds an input (it would delete a `model/` trained from)."""
    from witune.atomic import check_output

    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: continue the run, or replace it")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {out} is a file, not a folder")
    local = [Path(p) for p in inputs if p and Path(p).expanduser().exists()]
    check_output(out, local, force=True, what="output_dir", folder=True)
    for src in local:
        if overwrite and out.is_dir() and src.resolve().is_relative_to(out.resolve()):
            raise ConfigError(f"output_dir {out} holds the input {src}: --overwrite would delete it; train elsewhere")
    if resume or overwrite or not out.is_dir():
        return
    held = sorted(p.name for p in out.iterdir())
    if held:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise ConfigError(
            f"output_dir {out} is not empty ({shown}); continue its run with --resume, replace it "
            "with --overwrite, or choose another output_dir"
        )


def clear_run(out: Path, extra: tuple[str, ...] = ()) -> None:
    """--overwrite: remove the old run's files and folders (checkpoints too), and `extra` entries."""
    for name in (*RUN_ENTRIES, *extra):
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def data_fingerprint(units: list[list[Any]]) -> str:
    """sha256 of the training rows (token ids and weights, in order): a resume on changed data is refused even
    when the file name and every setting are the same."""
    h = hashlib.sha256()
    for unit in units:
        for row in unit:
            h.update(array("q", row.input_ids).tobytes())
            h.update(array("d", row.weights).tobytes())
            h.update(b"|")
        h.update(b"#")
    return h.hexdigest()


def previous_config(out: Path, config_cls: type[FlatConfig] = TrainConfig) -> dict[str, Any] | None:
    """The settings of the run last started in `out` (its config.yaml, read as a `config_cls`), or None. A
    config.yaml of another kind of run (a `witune train` run where a DPO run resumes) is refused in one line."""
    path = out / "config.yaml"
    if not path.is_file():
        return None
    if config_cls is TrainConfig:
        return config_dict(load_config(path))
    try:
        return config_dict(config_cls.load(path, validate=False))
    except ConfigError as e:
        raise ConfigError(
            f"cannot resume in {out}: its config.yaml is not that of a {config_cls.__name__} run ({e}); "
            "choose another output_dir"
        ) from None


def _stored(key: str, value: Any) -> Any:
    """A setting as a checkpoint stored it, in today's terms: checkpoints from before bfd packing hold `pack` as
    a bool, and their true was in-order greedy packing (resume those with `pack: greedy`)."""
    if key == "pack" and isinstance(value, bool):
        return "greedy" if value else "none"
    return value


def differing_settings(old: dict[str, Any], new: FlatConfig) -> list[str]:
    """'key old -> new' for every loss, data or schedule setting that differs (a `witune train` or DPO config)."""
    now = config_dict(new)
    return [
        f"{k} {_stored(k, old[k])!r} -> {now[k]!r}"
        for k in now
        if k in old and k not in RUNTIME_KEYS | LENGTH_KEYS and _stored(k, old[k]) != now[k]
    ]


def check_resume(
    where: Path,
    old: dict[str, Any] | None,
    new: FlatConfig,
    state: CheckpointState | None = None,
    fingerprint: str | None = None,
    rows: int | None = None,
    global_batch: int | None = None,
    total: int | None = None,
) -> None:
    """Refuse a resume that would continue a different run; the message names every difference."""
    diffs = differing_settings(old, new) if old is not None else []
    state = state or CheckpointState()
    if fingerprint is not None and state.data_sha256 not in (None, fingerprint):
        diffs.append(
            f"the training data itself ({state.rows} rows -> {rows} rows, or other tokens: the "
            "file's content, the tokenizer or the packing changed)"
        )
    if global_batch is not None and state.global_batch not in (None, global_batch):
        diffs.append(f"global batch (batch size x accumulation x processes) {state.global_batch} -> {global_batch}")
    if diffs:
        raise ConfigError(
            f"cannot resume from {where}: it was trained with other settings: {'; '.join(diffs)}. "
            "Resume with the same settings, or start over with --overwrite (or another output_dir)"
        )
    step = state.step
    if total is not None and step is not None and int(step) > total:
        raise ConfigError(
            f"cannot resume from {where}: it is at step {step}, past the {total} steps now "
            "configured (max_steps / epochs)"
        )


def sync_learning_rate(scheduler: Any) -> float:
    """After loading a checkpoint, set the optimizer's learning rate to the *current* schedule's value at the
    resumed step.

    Why: the checkpoint restores the optimizer's param-group `lr` as the old schedule left it, and the scheduler
    only writes a new lr in its next `step()`, after the first resumed optimizer step. A run resumed with a
    longer max_steps therefore took that first step at the old schedule's final lr (0 for cosine and linear
    decay). Recomputing it here is a no-op for an unchanged schedule (the same expression LambdaLR evaluates)."""
    lrs = [base * fn(scheduler.last_epoch) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs
    return lrs[0]


class RunRecord:
    """config.yaml and metrics.jsonl as they were before a run resumes in a folder that holds a finished model.

    They describe `model/`. When the final save of the resumed run fails (a full disk), `model/` stays the old
    one (it is swapped in whole), so these two go back to what they were: the folder never describes steps its
    model does not have. The checkpoints the run wrote stay, so `--resume` continues from them.
    """

    def __init__(self, out: Path):
        self.out = out
        self.saved: dict[str, bytes | None] | None = None
        if (out / "model").is_dir():
            self.saved = {n: (out / n).read_bytes() if (out / n).is_file() else None for n in RUN_ENTRIES[:2]}

    def restore(self) -> None:
        from witune.atomic import atomic_write_bytes

        for name, data in (self.saved or {}).items():
            if data is None:
                (self.out / name).unlink(missing_ok=True)
            else:
                atomic_write_bytes(self.out / name, data)
