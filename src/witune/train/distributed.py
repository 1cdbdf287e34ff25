"""How the model is spread over processes: DDP / DeepSpeed through accelerate, or FSDP2 through torch itself.

* **DDP** (`torchrun`, `accelerate launch` with a MULTI_GPU / MULTI_CPU config): accelerate wraps the model.
* **DeepSpeed ZeRO-2/3** (`accelerate launch` with a DEEPSPEED config): accelerate builds the DeepSpeed engine.
  witune writes into DeepSpeed's config what it decides itself (micro-batch size, gradient accumulation,
  gradient clipping, gathering ZeRO-3 weights for the final `model/`) and refuses a config that sets them
  otherwise, or that brings its own optimizer or scheduler. On a machine without GPUs accelerate would count
  one process (it has no backend for the device "cpu"): witune names gloo as the backend, so DeepSpeed's CPU
  accelerator runs over gloo and accelerate counts the processes DeepSpeed runs.
* **FSDP2** (`fsdp: true` in the witune config): witune shards the model itself with torch's `fully_shard`
  (each decoder layer, then the root), on CPU (gloo) or GPUs, because accelerate 1.16 runs FSDP only on GPUs:
  on a CPU machine it silently falls back to DDP (`cpu=True`) or to independent processes. Checkpoints are
  sharded (`torch.distributed.checkpoint`, one file per process, in `step-N/sharded`); the final `model/` is
  gathered into one plain Hugging Face folder. accelerate still runs the loop (processes, reductions,
  gradient accumulation, the scheduler's and RNG states in checkpoints); it never sees the model.
  An accelerate FSDP launch config on a CPU machine is refused (it would silently be DDP).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from witune.errors import ConfigError
from witune.train.config import TrainConfig

SHARDED_DIR = "sharded"  # the model and optimizer shards inside a checkpoint folder (fsdp: true)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _launched_with(kind: str) -> bool:
    """Whether `accelerate launch` asked for `kind` (FSDP or DEEPSPEED): it says so in the environment."""
    return os.environ.get(f"ACCELERATE_USE_{kind}", "false").lower() == "true"


def accelerator_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """Arguments for `Accelerator` that pick the processes' backend; refuses launches that cannot run as asked."""
    from accelerate.utils import InitProcessGroupKwargs

    gpu = torch.cuda.is_available()
    world = world_size()
    if cfg.fsdp and world < 2:
        raise ConfigError("fsdp: true shards over several processes; start 2 or more (torchrun, accelerate launch)")
    if cfg.fsdp and (_launched_with("FSDP") or _launched_with("DEEPSPEED")):
        raise ConfigError(
            "fsdp: true shards the model with torch's fully_shard itself: launch it with a DDP (MULTI_GPU / "
            "MULTI_CPU) accelerate config or torchrun, not an FSDP or DeepSpeed one"
        )
    if _launched_with("FSDP") and not gpu:
        raise ConfigError(
            "accelerate runs FSDP only on GPUs (on this CPU machine it would silently train as DDP); "
            "set fsdp: true in the witune config instead, which shards with torch's fully_shard on CPU too"
        )
    if _launched_with("DEEPSPEED") and not gpu and world > 1:
        # accelerate finds no backend for the device "cpu" and would count 1 process; gloo is DeepSpeed's CPU one.
        return {"kwargs_handlers": [InitProcessGroupKwargs(backend="gloo")]}
    # accelerate picks its multi-process CPU (gloo) backend only when told `cpu=True`; without a GPU, several
    # processes (torchrun, `accelerate launch --multi_gpu` on a CPU machine) would otherwise each run alone.
    return {"cpu": world > 1 and not gpu}


def uses_deepspeed(acc: Any) -> bool:
    from accelerate.utils import DistributedType

    return bool(acc.distributed_type == DistributedType.DEEPSPEED)


def unwrap(acc: Any, model: Any) -> Any:
    """The model inside its DDP (or DataParallel) wrapper. accelerate's `unwrap_model` imports DeepSpeed whenever
    it is installed, which prints DeepSpeed's "Setting accelerator to CPU" warning at every run that never asked
    for DeepSpeed: only a DeepSpeed run goes through it."""
    if uses_deepspeed(acc):
        return acc.unwrap_model(model)
    from torch.nn import DataParallel
    from torch.nn.parallel import DistributedDataParallel

    while True:
        if isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        elif "_orig_mod" in model.__dict__:  # torch.compile's wrapper
            model = model.__dict__["_orig_mod"]
        else:
            return model


@contextmanager
def deepspeed_unprobed(acc: Any) -> Iterator[None]:
    """transformers' `save_pretrained` unwraps the model through accelerate, which imports DeepSpeed whenever it is
    installed; DeepSpeed's import then probes for an accelerator and, on a machine without CUDA, warns "Setting
    accelerator to CPU" at every run that never asked for it. Where DeepSpeed is not configured and would pick
    the CPU anyway, it is told so (DS_ACCELERATOR, for this block only): the same choice, without the warning."""
    quiet = not (uses_deepspeed(acc) or "deepspeed" in sys.modules or "DS_ACCELERATOR" in os.environ)
    if not quiet or (torch.cuda.device_count() > 0 and torch.cuda.is_available()):
        yield
        return
    os.environ["DS_ACCELERATOR"] = "cpu"
    try:
        yield
    finally:
        os.environ.pop("DS_ACCELERATOR", None)


def configure_deepspeed(acc: Any, cfg: TrainConfig, grad_accum: int) -> None:
    """Write witune's batch, accumulation and clipping into the DeepSpeed config (before `prepare`)."""
    from accelerate.utils import DistributedType

    if acc.distributed_type != DistributedType.DEEPSPEED:
        return
    ds = acc.state.deepspeed_plugin.deepspeed_config
    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise ConfigError(
                f"the DeepSpeed config has a '{key}' section: witune builds the optimizer and the learning-rate "
                "schedule from its own config; remove it"
            )
    wanted: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.per_device_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": cfg.per_device_batch_size * grad_accum * acc.num_processes,
        "gradient_clipping": float(cfg.max_grad_norm),
    }
    for key, value in wanted.items():
        given = ds.get(key, "auto")
        if given not in ("auto", None) and float(given) != float(value):
            raise ConfigError(
                f"the DeepSpeed config sets {key}={given} but the witune config means {key}={value}; "
                "set it to 'auto' (witune fills it in)"
            )
        ds[key] = value
    zero = ds.setdefault("zero_optimization", {})
    if zero.get("stage") == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # needed to write the final model/ folder


def shard(model: Any, acc: Any, precision: str) -> Any:
    """FSDP2: `fully_shard` every decoder layer (the model's `_no_split_modules`), then the whole model.
    Under bf16 the forward runs in accelerate's autocast, as it would for a model accelerate prepared."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from witune.train.precision import autocast_dtype

    if precision == "bf16_weights":
        raise ConfigError("fsdp: true needs one dtype per layer's parameters; use precision: fp32 or bf16")
    mesh = init_device_mesh(acc.device.type, (acc.num_processes,))
    layers = set(getattr(model, "_no_split_modules", None) or ())
    for module in model.modules():
        if type(module).__name__ in layers:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    if autocast_dtype(precision) == "bf16":
        model.forward = torch.autocast(acc.device.type, dtype=torch.bfloat16)(model.forward)
    return model


def save_sharded(model: Any, optimizer: Any, folder: Path) -> None:
    """Every process writes its shards of the model and optimizer state into `folder/sharded`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(folder / SHARDED_DIR))


def load_sharded(model: Any, optimizer: Any, folder: Path) -> None:
    """Restore what `save_sharded` wrote (same number of processes), in place."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not (folder / SHARDED_DIR).is_dir():
        raise ConfigError(f"{folder} has no {SHARDED_DIR}/ folder: it was not written by a run with fsdp: true")
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.load({"model": model_state, "optim": optim_state}, checkpoint_id=str(folder / SHARDED_DIR))  # in place
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state)


def full_state_dict(acc: Any, model: Any, fsdp: bool) -> dict[str, Any]:
    """The whole model's weights for the final `model/` (every process must call this; full on the main one)."""
    if uses_deepspeed(acc):
        return acc.get_state_dict(model)  # gathers ZeRO-3 shards too
    if not fsdp:
        return unwrap(acc, model).state_dict()  # what accelerate's get_state_dict does without DeepSpeed
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def as_float(value: Any) -> float:
    """A gradient norm as a float: FSDP2 returns a replicated DTensor."""
    full = getattr(value, "full_tensor", None)
    return float(full() if full is not None else value)
