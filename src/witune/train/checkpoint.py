"""Atomic checkpoints: `checkpoints/.tmp-step-N` is written completely, then renamed to `checkpoints/step-N`.

A rename within one folder is atomic on POSIX file systems, so a crash mid-write leaves only a `.tmp-*`
folder, which is ignored (and cleared by the next save); the newest `step-N` is always complete. The content
is accelerate's `save_state` (model, optimizer, registered scheduler, RNG states of every process) plus
`trainer_state.json` (step, epoch, data position, and the run's settings and data hash that a resume is checked
against, see `witune.train.runfolder`), written last inside the temporary folder.

Security: accelerate's `load_state` unpickles parts of a checkpoint (RNG states, registered objects such as the
scheduler), so loading a checkpoint runs whatever code it holds: resume only from checkpoints you wrote.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from witune.atomic import finish_tree, fsync_dir

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class CheckpointState:
    """witune's `trainer_state.json`: where the run stands and what a resume is checked against.

    Every field may be missing (None): checkpoints written before a field existed, and the DPO state (settings
    and data only), are read by the same checks, which skip what was not stored.
    """

    step: int | None = None
    epoch: int | None = None  # the data epoch of the last step, and the steps done within it
    step_in_epoch: int | None = None
    total_steps: int | None = None
    config: dict[str, Any] | None = None  # the run's settings (`config_dict`)
    rows: int | None = None  # training units and their hash (`runfolder.data_fingerprint`)
    data_sha256: str | None = None
    global_batch: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckpointState:
        """Read a stored state; keys of other versions (older or newer) that this one does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(cls, checkpoint: Path) -> CheckpointState:
        return cls.from_json(json.loads((checkpoint / STATE_FILE).read_text()))


def checkpoint_dirs(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root` as (step, path), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    dirs = checkpoint_dirs(root)
    return dirs[-1][1] if dirs else None


def save_checkpoint(
    accelerator: Any,
    root: str | Path,
    step: int,
    state: CheckpointState,
    keep: int = 0,
    save_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write checkpoint `step` atomically (every process must call this) and keep the newest `keep` (0: all).
    `save_extra(folder)`, called on every process after accelerate's state, adds what accelerate does not hold
    (the model and optimizer shards of an FSDP2 run, `witune.train.distributed`)."""
    root = Path(root)
    tmp, final = root / f".tmp-step-{step}", root / f"step-{step}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-step-*"):  # left by a crash: never complete, never used
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if save_extra is not None:
        save_extra(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json_synced(tmp / STATE_FILE, state.to_json())
        publish_checkpoint(tmp, final, keep)
    accelerator.wait_for_everyone()
    return final


def publish_checkpoint(tmp: Path, final: Path, keep: int = 0) -> None:
    """Rename a finished checkpoint folder into place (`final`, e.g. checkpoints/step-N), make the rename durable,
    and keep the newest `keep` checkpoints beside it (0: all). Used by `witune train` and `witune dpo`."""
    root = final.parent
    finish_tree(tmp)
    if final.exists():  # a re-run of the same step after a resume: replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_dir(root)
    if keep > 0:
        for _, old in checkpoint_dirs(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(accelerator: Any, path: str | Path) -> CheckpointState:
    """Restore model, optimizer, scheduler and RNG states; returns the trainer state (step, epoch, ...)."""
    path = Path(path)
    accelerator.load_state(str(path))
    return CheckpointState.read(path)


def _write_json_synced(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
