"""Experiment trackers (`report_to`): TensorBoard and Weights & Biases, written from the main process only.

`metrics.jsonl` is the run's own record and is written before any tracker sees a step; a tracker can only
add to it, never cost it a line:

* a tracker whose package is missing is refused before any work (one line naming the package to install);
* a tracker that fails to start, or fails later while logging or closing, is reported in one line and
  dropped; the training goes on and `metrics.jsonl` stays complete.

Where they write: TensorBoard event files in `output_dir/tensorboard/` (a resume purges the steps after its
checkpoint, so the curves read like those of an uninterrupted run); W&B in `output_dir/wandb/`, as `wandb`
itself is configured (`WANDB_MODE=offline` keeps it off the network; `WANDB_PROJECT` names the project,
default "witune"). MLflow is not offered: MLflow 3.18's local file store is in maintenance mode and refuses
to start without `MLFLOW_ALLOW_FILE_STORE=true`, and its SQLite store needs the full mlflow package.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

TRACKERS = ("tensorboard", "wandb")
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}
TENSORBOARD_DIR = "tensorboard"


def parse(report_to: str) -> list[str]:
    """'tensorboard, wandb' -> ['tensorboard', 'wandb']; 'none' or '' -> []."""
    return [t.strip() for t in report_to.split(",") if t.strip() and t.strip() != "none"]


def unknown(report_to: str) -> list[str]:
    """Names in `report_to` that are not trackers witune offers."""
    return [t for t in parse(report_to) if t not in TRACKERS]


def check_installed(names: list[str]) -> None:
    """Refuse, before any work, a tracker whose package is not installed."""
    from witune.errors import ConfigError

    for name in names:
        if importlib.util.find_spec(_PACKAGES[name]) is None:
            raise ConfigError(
                f"report_to: {name} needs the package '{_PACKAGES[name]}' (pip install 'witune[trackers]')"
            )


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class _TensorBoard:
    def __init__(self, out: Path, config: dict[str, Any], resume_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events after the resumed checkpoint (written before a kill) are hidden from the curves.
        self.writer = SummaryWriter(str(out / TENSORBOARD_DIR), purge_step=resume_step + 1 if resume_step else None)
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in config.items()), global_step=resume_step)

    def log(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


# W&B online waits up to 90 s (its default init_timeout) for a server it cannot reach before it gives up: about
# 107 s before the warning, every run, on a machine without a network. When a 2 s probe of the server fails it
# gets this long instead.
OFFLINE_INIT_TIMEOUT = 10.0


def wandb_init_timeout() -> float | None:
    """A short init timeout when W&B online is likely offline (its server unreachable now); None (W&B's own
    default) when its server answers, or when W&B is told its mode (`WANDB_MODE`: offline, disabled, ...)."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("WANDB_MODE"):
        return None
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname or "api.wandb.ai", port), timeout=2.0).close()
    except OSError:
        return OFFLINE_INIT_TIMEOUT
    return None


class _WandB:
    def __init__(self, out: Path, config: dict[str, Any], resume_step: int):
        import wandb

        timeout = wandb_init_timeout()
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "witune"),
            dir=str(out),
            config=config,
            reinit="create_new",
            settings=wandb.Settings(init_timeout=timeout) if timeout is not None else None,
        )

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


_CLASSES = {"tensorboard": _TensorBoard, "wandb": _WandB}


class Trackers:
    """The run's trackers; a no-op on every process but the main one, and when none is configured."""

    def __init__(self, names: list[str], out: Path, config: dict[str, Any], enabled: bool, resume_step: int = 0):
        self.active: dict[str, Any] = {}
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            try:
                self.active[name] = _CLASSES[name](out, config, resume_step)
            except Exception as e:  # any failure of a third-party tracker: reported, never fatal
                _warn(
                    f"tracker '{name}' did not start ({type(e).__name__}: {e}); training goes on, metrics.jsonl has every step"
                )

    def log(self, values: dict[str, float], step: int) -> None:
        for name, tracker in list(self.active.items()):
            try:
                tracker.log(values, step)
            except Exception as e:
                _warn(
                    f"tracker '{name}' failed at step {step} ({type(e).__name__}: {e}) and is dropped; metrics.jsonl goes on"
                )
                del self.active[name]

    def close(self) -> None:
        for name, tracker in self.active.items():
            try:
                tracker.close()
            except Exception as e:
                _warn(f"tracker '{name}' did not close cleanly ({type(e).__name__}: {e})")
        self.active = {}
