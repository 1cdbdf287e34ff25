"""Building blocks of a run: model and tokenizer, LoRA, optimizer, schedule of the learning rate, data rows."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from witune.errors import ConfigError
from witune.train.config import TrainConfig


def load_tokenizer(cfg: TrainConfig) -> Any:
    """The tokenizer of `cfg.tokenizer` or `cfg.model` (alias, .gguf, folder or hub name), with a pad token."""
    from witune.models import load_tokenizer as load

    return load(cfg.tokenizer or cfg.model)


def pad_id(tokenizer: Any) -> int:
    from witune.models.load import pad_token_id

    pid = pad_token_id(tokenizer)
    if pid is None:
        raise ConfigError("the tokenizer has neither a pad nor an eos token; set one in its tokenizer_config.json")
    return int(pid)


def load_model(cfg: TrainConfig) -> Any:
    """Weights in the dtype of `cfg.precision` (`witune.train.precision`: fp32 unless bf16_weights), optional
    LoRA adapter (peft keeps the adapter's weights in fp32)."""
    from witune.models import load_model as load
    from witune.train.precision import weight_dtype

    model = load(cfg.model, dtype=weight_dtype(cfg.precision))
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (LoRA) without enable_input_require_grads.
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    lora = cfg.peft_config()
    if lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, lora)
    return model


def build_optimizer(cfg: TrainConfig, model: Any, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW with the usual split: no weight decay on biases and norm weights (1-D tensors). `fused`: torch's
    fused AdamW kernel (the same update in one pass over each tensor: ~0.09 s a step for SmolLM2-135M on
    2 CPU cores against 0.3-0.6 s for the per-tensor loop), for plain tensors only; a resumed checkpoint keeps
    the implementation it was written with (its param groups carry the flag)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_epsilon,
        fused=fused or None,
    )


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    from transformers import get_scheduler

    name = "constant_with_warmup" if cfg.lr_scheduler == "constant" else cfg.lr_scheduler
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def load_units(cfg: TrainConfig, tokenizer: Any, quiet: bool = False) -> list[list[Any]]:
    """Training units: one `Rendered` per unit, or several per unit when packing."""
    from rich.console import Console

    from witune.data import load_examples, pack
    from witune.data.cache import prepare_examples
    from witune.data.collate import BIN_PACKINGS

    on_error = "skip" if cfg.skip_bad else "raise"
    loaded = load_examples(cfg.data, format=cfg.format, on_error=on_error, split=cfg.split, limit=cfg.limit)
    data = prepare_examples(
        loaded.examples,
        tokenizer,
        cfg.role_weights_obj(),
        template=cfg.template,
        max_length=cfg.max_length,
        truncation=cfg.truncation,
        final_turn_only=cfg.final_turn_only,
        on_error=on_error,
        workers=cfg.data_workers,
        cache_dir=cfg.data_cache or None,
        progress=cfg.progress and not quiet,
    )
    if not quiet:
        err = Console(stderr=True)
        for e in loaded.skipped + data.skipped + data.zero_trainable:
            err.print(f"[yellow]skipped:[/] {e}", highlight=False, soft_wrap=True)
        for line in data.warnings(cfg.role_weights_obj()):
            err.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
        err.print(f"[dim]{loaded.summary()}; {data.summary()}[/]", highlight=False)
    if not data.rows:
        raise ConfigError(f"no trainable rows in {cfg.data}")
    if cfg.pack in BIN_PACKINGS:
        return pack(data.rows, cfg.max_length, cfg.pack)
    return [[r] for r in data.rows]


def grad_accum(cfg: TrainConfig, world: int) -> int:
    """Micro-batches per optimizer step: `grad_accum`, or what `global_batch_size` implies for `world` processes."""
    if cfg.global_batch_size <= 0:
        return cfg.grad_accum
    per_step = cfg.per_device_batch_size * world
    if cfg.global_batch_size % per_step:
        raise ConfigError(
            f"global_batch_size={cfg.global_batch_size} is not a multiple of per_device_batch_size "
            f"x processes = {per_step}"
        )
    return cfg.global_batch_size // per_step


def planned_tokens(cfg: TrainConfig, tokenizer: Any | None = None) -> tuple[int, int]:
    """(optimizer steps, training tokens) that `witune train` will run with `cfg` on one process, counted before
    any training from the same units and seeded schedule (the tokens of metrics.jsonl, summed): what a budget in
    tokens is checked against. Every point of a sweep that differs only in its weights trains the same tokens."""
    from witune.train.batches import Schedule

    units = load_units(cfg, tokenizer if tokenizer is not None else load_tokenizer(cfg), quiet=True)
    schedule = Schedule(len(units), cfg.per_device_batch_size, grad_accum(cfg, 1), 1, cfg.seed, cfg.drop_last)
    if schedule.steps_per_epoch == 0:
        raise ConfigError(f"{len(units)} rows < one global batch of {schedule.global_batch} with drop_last")
    total = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * schedule.steps_per_epoch
    sizes = [sum(len(r) for r in u) for u in units]
    tokens = sum(sizes[i] for s in range(total) for i in schedule.step_indices(*schedule.locate(s)))
    return total, tokens


def save_tokenizer_and_note(tokenizer: Any, out: Path, note: str | None) -> None:
    tokenizer.save_pretrained(out)  # `out` is the temporary folder of atomic_dir (engine._save_final)
    if note:
        (out / "README_witune.md").write_text(note)
