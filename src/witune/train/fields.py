"""The field groups `TrainConfig` and `DPOConfig` share (litgpt-style argument groups): optimiser, LoRA, runtime.

Each group is a dataclass base with its fields, their docstrings and their ranges; a config re-declares a
field to change its default or its docstring (DPO's learning rate is 5e-7, its output folder another).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from witune.data.weights import check_weight_range
from witune.errors import ConfigError
from witune.flat_config import ConfigKeyError, FlatConfig, above, at_least, interval, one_of

SCHEDULERS = ("cosine", "linear", "constant")
PRECISIONS = ("fp32", "bf16")


@dataclass
class OptimizerFields(FlatConfig):
    """Optimisation settings of every trainer."""

    learning_rate: float = 2e-5
    """Peak learning rate."""
    epochs: int = 3
    """Passes over the data (ignored when max_steps > 0)."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0: run `epochs` epochs)."""
    per_device_batch_size: int = 4
    """Samples (or packed rows) per micro-batch on each process."""
    grad_accum: int = 1
    """Micro-batches per optimizer step on each process."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW), L2 for SGD."""
    lr_scheduler: str = "cosine"
    """cosine, linear (both decay to 0 after warmup) or constant (after warmup)."""
    warmup_ratio: float = 0.03
    """Fraction of all optimizer steps spent warming up linearly from 0."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""

    RANGES = {
        "learning_rate": above(0),
        "max_steps": at_least(0, "(0: run `epochs` epochs)"),
        "per_device_batch_size": at_least(1),
        "grad_accum": at_least(1),
        "weight_decay": at_least(0),
        "lr_scheduler": one_of(SCHEDULERS),
        "warmup_ratio": interval(0, 1),
        "max_grad_norm": at_least(0, "(0: no clipping)"),
    }

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from super().problems()
        if self.epochs < 1 and self.max_steps <= 0:
            yield "epochs", "must be >= 1 (or set max_steps)"


@dataclass
class LoraFields(FlatConfig):
    """A peft LoRA adapter instead of full fine-tuning."""

    lora_r: int = 0
    """LoRA rank (0: full fine-tuning; > 0 trains a peft LoRA adapter)."""
    lora_alpha: int = 16
    """LoRA alpha."""
    lora_dropout: float = 0.05
    """LoRA dropout."""
    lora_target_modules: str = "all-linear"
    """Modules that get adapters: 'all-linear' or a comma-separated list of module names."""
    merge_lora: bool = True
    """Merge the adapter into the base weights for the final model (false: save the adapter only)."""

    RANGES = {"lora_r": at_least(0, "(0: full fine-tuning)"), "lora_alpha": above(0), "lora_dropout": interval(0, 1)}

    def peft_config(self) -> Any:
        """The peft `LoraConfig` of these settings; None for full fine-tuning."""
        if self.lora_r <= 0:
            return None
        from peft import LoraConfig

        targets = self.lora_target_modules
        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            task_type="CAUSAL_LM",
            target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
        )


@dataclass
class RuntimeFields(FlatConfig):
    """Precision, seed, where the run goes and what it logs."""

    precision: str = "fp32"
    """fp32 or bf16 (mixed precision via accelerate)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    seed: int = 42
    """Seed for data order, initialisation of LoRA adapters and dropout."""
    output_dir: str = "runs/witune"
    """Run folder: model/, checkpoints/, config.yaml, metrics.jsonl."""
    save_every: int = 0
    """Write a checkpoint every N optimizer steps (0: none, only the final model)."""
    save_total_limit: int = 2
    """Keep only the newest N checkpoints (0: keep all)."""
    log_every: int = 1
    """Log metrics every N optimizer steps."""
    report_to: str = "none"
    """Trackers, comma-separated: none, tensorboard, wandb (accelerate `log_with`)."""
    progress: bool = True
    """Show a progress bar."""

    RANGES = {
        "precision": one_of(PRECISIONS),
        "save_every": at_least(0, "(0: no checkpoints)"),
        "save_total_limit": at_least(0, "(0: keep all)"),
        "log_every": at_least(1),
    }

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from super().problems()
        if not self.output_dir.strip():
            yield "output_dir", "must not be empty"


def check_weights(named: Mapping[str, float | None], allow_above_one: bool) -> None:
    """Loss weights of a config in the papers' range [0, 1] (`check_weight_range`): a value out of it is an error
    naming its key; one above 1 that `allow_weight_above_one` permits is a warning on stderr."""
    for key, w in named.items():
        try:
            warnings = check_weight_range(
                {f"config key '{key}'": w}, allow_above_one, "set allow_weight_above_one: true"
            )
        except ConfigError as e:
            raise ConfigKeyError(key.split(".")[0], str(e)) from None
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
