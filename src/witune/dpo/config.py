"""`witune dpo` configuration: one flat dataclass, a docstring under every field, YAML + `--set` overrides.

The same kernel as `witune train` (`witune.flat_config`: docs, coercion, ranges, duplicate-key YAML) and the
same optimiser, LoRA and runtime field groups (`witune.train.fields`), with DPO's own defaults.
Resolution order, later wins: field defaults < preset < YAML file < `--set key=value`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from witune.flat_config import FlatConfig, at_least, interval, one_of, optional
from witune.flat_config import above as finite_above
from witune.train.fields import LoraFields, OptimizerFields, RuntimeFields

PRESETS: dict[str, dict[str, Any]] = {
    # The alignment-handbook recipe for zephyr-7b-beta (DPO on UltraFeedback).
    "zephyr": {"beta": 0.01, "learning_rate": 5e-7, "epochs": 1, "lr_scheduler": "cosine", "warmup_ratio": 0.1},
    # A short, high learning-rate run: enough to see the DPO loss fall on a small model (tests, examples).
    "quick": {"beta": 0.1, "learning_rate": 1e-5, "epochs": 1, "lr_scheduler": "constant", "warmup_ratio": 0.0},
}
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust", "sigmoid_norm")


@dataclass
class _Head(FlatConfig):
    """The sections of a DPO run before the shared groups: model, data, DPO."""

    # --- model
    model: str = ""
    """Start model: a `witune train` run folder (its model/ is used), a model folder (full or LoRA adapter:
    an adapter is merged into its base first), a hub name, or 'smollm2'. It is also the frozen reference."""
    tokenizer: str | None = None
    """Tokenizer to load when it differs from the model's own."""

    # --- data
    data: str = ""
    """Preference data: records with prompt / chosen / rejected (plain strings or chat messages); .json,
    .jsonl, .csv, .parquet, a dataset folder or a hub name (e.g. an UltraFeedback copy)."""
    split: str = "train"
    """Split of a dataset folder or hub dataset."""
    limit: int | None = None
    """Use only the first N pairs (null: all)."""
    skip_bad: bool = False
    """Skip bad records (and list them) instead of stopping at the first."""
    eval_data: str = ""
    """Held-out preference pairs for eval loss / reward margin (empty: use eval_fraction of `data`)."""
    eval_fraction: float = 0.0
    """Fraction of `data` held out for evaluation when `eval_data` is empty (0: no evaluation)."""
    max_length: int = 512
    """Maximum tokens of prompt + completion (TRL truncates the end)."""

    # --- DPO
    beta: float = 0.1
    """DPO beta: strength of the pull towards the reference model (higher: stay closer)."""
    loss_type: str = "sigmoid"
    """DPO loss: sigmoid (the DPO paper), hinge, ipo, robust, sigmoid_norm."""
    label_smoothing: float = 0.0
    """Assumed share of flipped preference labels (robust / cDPO loss)."""


@dataclass
class DPOConfig(RuntimeFields, LoraFields, OptimizerFields, _Head):
    """Preference optimisation (TRL's DPOTrainer) of a model `witune train` wrote. Sections: model, data,
    DPO, optimisation, LoRA, runtime."""

    learning_rate: float = 5e-7
    """Peak learning rate."""
    epochs: int = 1
    """Passes over the pairs (ignored when max_steps > 0)."""
    warmup_ratio: float = 0.1
    """Fraction of all optimizer steps spent warming up linearly from 0."""
    lora_r: int = 0
    """LoRA rank (0: full fine-tuning; > 0 trains a new LoRA adapter; the reference is the adapter disabled)."""
    seed: int = 42
    """Seed for data order, LoRA initialisation and the held-out split."""
    output_dir: str = "runs/witune-dpo"
    """Run folder: model/, checkpoints/, config.yaml, metrics.jsonl, eval.json."""
    preset: str | None = None
    """Recipe whose values replace the defaults before the YAML is applied: zephyr or quick."""

    PRESETS = PRESETS
    TEMPLATE_VALUES = {"model": "<a witune train run folder>", "data": "<your preference pairs file>"}
    RANGES = {
        "loss_type": one_of(LOSS_TYPES),
        "beta": finite_above(0),
        "label_smoothing": interval(0, 0.5),
        "eval_fraction": interval(0, 1),
        "limit": optional(at_least(1)),
        "max_length": at_least(2),
        "preset": optional(one_of(sorted(PRESETS))),
    }

    def problems(self) -> Iterator[tuple[str, str]]:
        if not self.model:
            yield "model", "is required (a `witune train` output folder or a model)"
        if not self.data:
            yield "data", "is required (a preference data file; `witune dpo-pairs` makes one)"
        yield from super().problems()


def load_dpo_config(
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    preset: str | None = None,
    validate: bool = True,
) -> DPOConfig:
    """Defaults < preset < YAML at `path` < overrides. Unknown keys, wrong types and ranges raise ConfigError."""
    return DPOConfig.load(path, overrides, preset, validate)


def to_yaml(config: DPOConfig, comments: bool = True) -> str:
    """The config as YAML, every key preceded by its docstring as a comment."""
    return config.to_yaml(comments)
