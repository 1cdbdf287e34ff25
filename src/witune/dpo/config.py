"""`witune dpo` configuration: one flat dataclass, a docstring under every field, YAML + `--set` overrides.

Same conventions as `witune train` (`witune.train.config`): attribute docstrings feed `--help` and
`--print-config`; resolution order, later wins: field defaults < preset < YAML file < `--set key=value`.
The loader is generic over the dataclass so that it does not depend on TrainConfig's internals.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import typing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from witune.data.errors import ConfigError
from witune.train.config import parse_overrides

PRESETS: dict[str, dict[str, Any]] = {
    # The alignment-handbook recipe for zephyr-7b-beta (DPO on UltraFeedback).
    "zephyr": {"beta": 0.01, "learning_rate": 5e-7, "epochs": 1, "lr_scheduler": "cosine", "warmup_ratio": 0.1},
    # A short, high learning-rate run: enough to see the DPO loss fall on a small model (tests, examples).
    "quick": {"beta": 0.1, "learning_rate": 1e-5, "epochs": 1, "lr_scheduler": "constant", "warmup_ratio": 0.0},
}
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust", "sigmoid_norm")
SCHEDULERS = ("cosine", "linear", "constant")
PRECISIONS = ("fp32", "bf16")


@dataclass
class DPOConfig:
    """Preference optimisation (TRL's DPOTrainer) of a model `witune train` wrote. Sections: model, data,
    DPO, optimisation, LoRA, runtime."""

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

    # --- optimisation
    learning_rate: float = 5e-7
    """Peak learning rate."""
    epochs: int = 1
    """Passes over the pairs (ignored when max_steps > 0)."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0: run `epochs` epochs)."""
    per_device_batch_size: int = 4
    """Pairs per micro-batch on each process."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    lr_scheduler: str = "cosine"
    """cosine, linear or constant (after warmup)."""
    warmup_ratio: float = 0.1
    """Fraction of all optimizer steps spent warming up linearly from 0."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""

    # --- LoRA
    lora_r: int = 0
    """LoRA rank (0: full fine-tuning; > 0 trains a new LoRA adapter; the reference is the adapter disabled)."""
    lora_alpha: int = 16
    """LoRA alpha."""
    lora_dropout: float = 0.05
    """LoRA dropout."""
    lora_target_modules: str = "all-linear"
    """Modules that get adapters: 'all-linear' or a comma-separated list of module names."""
    merge_lora: bool = True
    """Merge the adapter into the weights for the final model (false: save the adapter only)."""

    # --- runtime
    precision: str = "fp32"
    """fp32 or bf16 (mixed precision)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    seed: int = 42
    """Seed for data order, LoRA initialisation and the held-out split."""
    output_dir: str = "runs/witune-dpo"
    """Run folder: model/, checkpoints/, config.yaml, metrics.jsonl, eval.json."""
    save_every: int = 0
    """Write a checkpoint every N optimizer steps (0: none, only the final model)."""
    save_total_limit: int = 2
    """Keep only the newest N checkpoints (0: keep all)."""
    log_every: int = 1
    """Log metrics every N optimizer steps."""
    report_to: str = "none"
    """Trackers, comma-separated: none, tensorboard, wandb."""
    progress: bool = True
    """Show a progress bar."""
    preset: str | None = None
    """Recipe whose values replace the defaults before the YAML is applied: zephyr or quick."""

    def validate(self) -> DPOConfig:
        """Check values that no type can express; raises ConfigError naming the key."""
        checks = [
            (bool(self.model), "model", "is required (a `witune train` output folder or a model)"),
            (bool(self.data), "data", "is required (a preference data file; `witune dpo-pairs` makes one)"),
            (self.loss_type in LOSS_TYPES, "loss_type", f"must be one of {LOSS_TYPES}"),
            (self.lr_scheduler in SCHEDULERS, "lr_scheduler", f"must be one of {SCHEDULERS}"),
            (self.precision in PRECISIONS, "precision", f"must be one of {PRECISIONS}"),
            (self.beta > 0 and math.isfinite(self.beta), "beta", "must be > 0"),
            (0 <= self.label_smoothing < 0.5, "label_smoothing", "must be in [0, 0.5)"),
            (0 <= self.eval_fraction < 1, "eval_fraction", "must be in [0, 1)"),
            (self.per_device_batch_size >= 1, "per_device_batch_size", "must be >= 1"),
            (self.grad_accum >= 1, "grad_accum", "must be >= 1"),
            (self.max_length >= 2, "max_length", "must be >= 2"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)"),
            (self.learning_rate >= 0 and math.isfinite(self.learning_rate), "learning_rate", "must be >= 0"),
            (self.epochs >= 1 or self.max_steps > 0, "epochs", "must be >= 1 (or set max_steps)"),
            (self.preset is None or self.preset in PRESETS, "preset", f"must be one of {sorted(PRESETS)}"),
        ]
        for ok, key, why in checks:
            if not ok:
                raise ConfigError(f"config key '{key}' {why}, got {getattr(self, key)!r}")
        return self


@cache
def field_docs() -> dict[str, str]:
    """{field name: its attribute docstring}, read from this module's source with `ast`."""
    body = ast.parse(inspect.getsource(DPOConfig)).body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _coerce(key: str, value: Any, where: str) -> Any:
    hint = typing.get_type_hints(DPOConfig)[key]
    args = typing.get_args(hint)
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{where}: key '{key}' cannot be null")
    bad = ConfigError(f"{where}: key '{key}' expects {getattr(base, '__name__', base)}, got {value!r}")
    if base is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if base is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise bad
        return int(value)
    if base is float:
        try:  # YAML 1.1 reads '1e-5' (no dot) as a string
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError
            return float(value)
        except ValueError:
            raise bad from None
    if isinstance(value, (dict, list)):
        raise bad
    return str(value)


def _apply(values: dict[str, Any], updates: dict[str, Any], where: str) -> None:
    valid = [f.name for f in dataclasses.fields(DPOConfig)]
    unknown = [k for k in updates if k not in valid]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(valid)}")
    for k, v in updates.items():
        values[k] = _coerce(k, v, where)


def load_dpo_config(
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    preset: str | None = None,
    validate: bool = True,
) -> DPOConfig:
    """Defaults < preset < YAML at `path` < overrides. Unknown keys and wrong types raise ConfigError."""
    file_values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f", line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{p}{line}: invalid YAML ({getattr(e, 'problem', e)})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of key: value at the top level")
        file_values = loaded or {}
    set_values = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    chosen = set_values.get("preset") or preset or file_values.get("preset")
    values: dict[str, Any] = {}
    if chosen is not None:
        if chosen not in PRESETS:
            raise ConfigError(f"unknown preset {chosen!r}; choose one of {sorted(PRESETS)}")
        values.update(PRESETS[chosen])
    _apply(values, file_values, str(path))
    _apply(values, set_values, "--set")
    values["preset"] = chosen
    cfg = DPOConfig(**values)
    return cfg.validate() if validate else cfg


def to_yaml(config: DPOConfig, comments: bool = True) -> str:
    """The config as YAML, every key preceded by its docstring as a comment."""
    docs = field_docs()
    lines = []
    for f in dataclasses.fields(config):
        if comments:
            lines.append(f"# {docs.get(f.name, '')}")
        dumped = yaml.safe_dump(
            {f.name: getattr(config, f.name)}, default_flow_style=True, sort_keys=False, width=10_000
        ).strip()
        lines.append(dumped[1:-1] if dumped.startswith("{") else dumped)
    return "\n".join(lines) + "\n"
