"""`witune train` configuration: one flat dataclass, a docstring under every field, YAML + `--set` overrides.

The docstrings are attribute docstrings (a string literal right under the field, as in litgpt); `field_docs`
reads them with `ast`, so they are written once and feed `--help`, `--print-config` and the example YAMLs.
Resolution order, later wins: field defaults < preset < YAML file < `--set key=value` overrides.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import sys
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from witune.data.errors import ConfigError
from witune.data.weights import check_weight_range, weight_pair
from witune.train.precision import BF16_WEIGHTS_NEEDS_LORA, PRECISIONS
from witune.train.trackers import TRACKERS
from witune.train.trackers import unknown as unknown_trackers
from witune.yaml_io import key_lines, load_yaml_file, load_yaml_text

PRESETS: dict[str, dict[str, Any]] = {
    # Stanford Alpaca, the recipe the PLW paper fine-tuned with.
    # Normaliser: "nonzero" (sum of w_t * nll_t over the step, divided by the number of tokens with w_t != 0),
    # stated here so that it is printed with the preset. Why: the PLW paper does not say how its weighted loss
    # was normalised (its text names no denominator), so witune uses the one definition the papers do give,
    # the WIT paper's L_WIT ("On the Effect of Instruction Tuning Loss on Generalization": it "normalizes by the
    # count of tokens with non-zero weight"). With it, PLW 0
    # is exactly Hugging Face's masked mean (conventional instruction tuning, the Alpaca code the PLW paper ran),
    # and PLW 1 is exactly the unmasked mean (continual pre-training), so both ends of the PLW axis are the
    # standard losses. In between, prompt tokens count fully in the denominator even at a small PLW, so the
    # response tokens' share of the step shrinks by about (1 + 1/Rg) on short-completion data; set
    # `normalization: weight_sum` (divide by the sum of weights) to keep the response scale fixed instead.
    "alpaca": {
        "learning_rate": 2e-5,
        "epochs": 3,
        "global_batch_size": 128,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.03,
        "max_length": 512,
        "weight_decay": 0.0,
        "normalization": "nonzero",
    },
    # The WIT paper's recipe.
    "wit": {
        "learning_rate": 2e-5,
        "epochs": 1,
        "optimizer": "adamw",
        "weight_decay": 0.1,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.01,
    },
}
OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("cosine", "linear", "constant")


@dataclass
class TrainConfig:
    """Everything a training run needs. Sections: model, data, loss, optimisation, LoRA, runtime."""

    # --- model
    model: str = "smollm2"
    """HF hub name, local folder, .gguf file, or 'smollm2' (offline SmolLM2-135M-Instruct)."""
    tokenizer: str | None = None
    """Tokenizer to load when it differs from `model` (default: the model's own)."""

    # --- data
    data: str = ""
    """Training data: .json/.jsonl/.csv/.parquet file, dataset folder, or datasets hub name."""
    format: str = "auto"
    """Record format: auto, alpaca, self_instruct, prompt_completion, messages, sharegpt."""
    template: str = "auto"
    """Prompt template: auto, alpaca, chat, plain."""
    split: str = "train"
    """Split of a dataset folder or hub dataset."""
    limit: int | None = None
    """Use only the first N examples (null: all)."""
    max_length: int = 512
    """Maximum tokens per sample (and per packed row)."""
    truncation: str = "left"
    """left (cut the prompt's start, keep the response), right (cut the end), drop (skip long samples)."""
    final_turn_only: bool = False
    """Train only the last assistant turn of chats; earlier turns count as prompt."""
    skip_bad: bool = False
    """Skip bad records (and list them) instead of stopping at the first."""
    pack: bool = False
    """Pack several samples per row (position ids restart per sample; attention never crosses samples)."""
    data_workers: int = 1
    """Processes that render and tokenize the data (chat templates render in Python: workers help there)."""
    data_cache: str = ""
    """Folder caching tokenized data by content hash, e.g. ~/.cache/witune/data (empty: no cache)."""

    # --- loss
    prompt_weight: float = 0.0
    """lambda_p: loss weight of prompt tokens (0 = conventional instruction tuning)."""
    response_weight: float = 1.0
    """lambda_r: loss weight of response tokens."""
    plw: float | None = None
    """Prompt-loss weight (PLW paper): when set, prompt weight = plw and response weight = 1."""
    role_weights: dict[str, float] = field(default_factory=dict)
    """Per-role weights overriding prompt/response, e.g. {system: 0.0, template: 0.0}."""
    normalization: str = "nonzero"
    """Normaliser Z of each optimizer step: nonzero (tokens with weight != 0), weight_sum, tokens, or a number."""
    allow_weight_above_one: bool = False
    """Allow prompt/response/PLW/role weights above 1 (outside the papers' range [0, 1]; a warning is printed)."""
    chunked_loss: bool = False
    """Compute the loss from hidden states and the output projection in chunks, never materialising the
    (tokens x vocab) logits: the memory peak of large vocabularies. Zero-weight tokens are skipped entirely."""
    loss_backend: str = "auto"
    """Kernel of the chunked loss: auto (fused Liger / cut-cross-entropy kernel on CUDA when installed, else
    torch), torch (witune's chunked autograd function, any device), liger or cce (that package's fused kernel;
    CUDA only, an error when it is not installed). Used only with chunked_loss: true."""

    # --- optimisation
    learning_rate: float = 2e-5
    """Peak learning rate."""
    epochs: int = 3
    """Passes over the data (ignored when max_steps > 0)."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0: run `epochs` epochs)."""
    per_device_batch_size: int = 4
    """Samples (or packed rows) per micro-batch on each process."""
    grad_accum: int = 1
    """Micro-batches per optimizer step on each process (overridden by global_batch_size)."""
    global_batch_size: int = 0
    """Samples per optimizer step over all processes; when > 0, grad_accum = this / (batch size x processes)."""
    drop_last: bool = False
    """Drop an epoch's last, incomplete global batch (false: train on it; the normaliser counts what is there)."""
    optimizer: str = "adamw"
    """adamw or sgd."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW), L2 for SGD."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.999
    """AdamW beta2."""
    adam_epsilon: float = 1e-8
    """AdamW epsilon."""
    lr_scheduler: str = "cosine"
    """cosine, linear (both decay to 0 after warmup) or constant (after warmup)."""
    warmup_ratio: float = 0.03
    """Fraction of all optimizer steps spent warming up linearly from 0."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""

    # --- LoRA
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

    # --- runtime
    precision: str = "fp32"
    """fp32; bf16 (accelerate's bf16 autocast over fp32 master weights); or bf16_weights (LoRA only: the frozen
    base weights stored in bf16, fp32 adapters, bf16 autocast). The loss is summed in fp32 in every case."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    fsdp: bool = False
    """Shard weights, gradients and optimizer state over the processes with torch's FSDP2 (fully_shard per
    decoder layer); works on CPU (gloo) and GPUs; checkpoints are sharded. Launch with torchrun or a DDP
    accelerate config (docs/multi_gpu.md)."""
    seed: int = 42
    """Seed for data order, initialisation of LoRA adapters and dropout."""
    deterministic: bool = False
    """Use torch deterministic algorithms (bit-for-bit reproducible runs and resumes; may be slower)."""
    output_dir: str = "runs/witune"
    """Run folder: model/, checkpoints/, config.yaml, metrics.jsonl."""
    save_every: int = 0
    """Write a checkpoint every N optimizer steps (0: none, only the final model)."""
    save_total_limit: int = 2
    """Keep only the newest N checkpoints (0: keep all)."""
    log_every: int = 1
    """Log metrics every N optimizer steps."""
    report_to: str = "none"
    """Trackers, comma-separated: none, tensorboard (output_dir/tensorboard), wandb (output_dir/wandb; set
    WANDB_MODE=offline to stay off the network). Main process only; metrics.jsonl is always written."""
    progress: bool = True
    """Show a progress bar."""
    preset: str | None = None
    """Recipe whose values replace the defaults before the YAML is applied: alpaca or wit."""

    def validate(self) -> TrainConfig:
        """Check values that no type can express; raises ConfigError naming the key."""

        def finite(v: Any) -> bool:
            return isinstance(v, (int, float)) and math.isfinite(v)

        checks = [
            (bool(self.data), "data", "is required (a data file, folder or dataset name)"),
            (self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {OPTIMIZERS}"),
            (self.lr_scheduler in SCHEDULERS, "lr_scheduler", f"must be one of {SCHEDULERS}"),
            (self.precision in PRECISIONS, "precision", f"must be one of {PRECISIONS}"),
            (self.precision != "bf16_weights" or self.lora_r > 0, "precision", BF16_WEIGHTS_NEEDS_LORA),
            (self.format in ("auto", *_formats()), "format", f"must be auto or one of {_formats()}"),
            (self.template in _templates(), "template", f"must be one of {_templates()}"),
            (self.truncation in ("left", "right", "drop"), "truncation", "must be one of ('left', 'right', 'drop')"),
            (self.limit is None or self.limit >= 1, "limit", "must be >= 1 or null"),
            (self.per_device_batch_size >= 1, "per_device_batch_size", "must be >= 1"),
            (self.grad_accum >= 1, "grad_accum", "must be >= 1"),
            (self.global_batch_size >= 0, "global_batch_size", "must be >= 0 (0: use grad_accum)"),
            (self.data_workers >= 1, "data_workers", "must be >= 1"),
            (self.max_length >= 2, "max_length", "must be >= 2"),
            (finite(self.warmup_ratio) and 0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)"),
            (finite(self.learning_rate) and self.learning_rate > 0, "learning_rate", "must be a finite number > 0"),
            (self.epochs >= 1 or self.max_steps > 0, "epochs", "must be >= 1 (or set max_steps)"),
            (self.max_steps >= 0, "max_steps", "must be >= 0 (0: run `epochs` epochs)"),
            (finite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "must be a finite number >= 0"),
            (finite(self.adam_beta1) and 0 <= self.adam_beta1 < 1, "adam_beta1", "must be in [0, 1)"),
            (finite(self.adam_beta2) and 0 <= self.adam_beta2 < 1, "adam_beta2", "must be in [0, 1)"),
            (finite(self.adam_epsilon) and self.adam_epsilon > 0, "adam_epsilon", "must be a finite number > 0"),
            (finite(self.max_grad_norm) and self.max_grad_norm >= 0, "max_grad_norm", "must be a finite number >= 0"),
            (self.lora_r >= 0, "lora_r", "must be >= 0 (0: full fine-tuning)"),
            (self.lora_alpha > 0, "lora_alpha", "must be > 0"),
            (finite(self.lora_dropout) and 0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)"),
            (self.save_every >= 0, "save_every", "must be >= 0 (0: no checkpoints)"),
            (self.save_total_limit >= 0, "save_total_limit", "must be >= 0 (0: keep all)"),
            (self.log_every >= 1, "log_every", "must be >= 1"),
            (not unknown_trackers(self.report_to), "report_to", f"names trackers from {TRACKERS} or none"),
            (not (self.fsdp and self.chunked_loss), "fsdp", "cannot be combined with chunked_loss: true"),
            (bool(self.output_dir.strip()), "output_dir", "must not be empty"),
            (self.preset is None or self.preset in PRESETS, "preset", f"must be one of {sorted(PRESETS)}"),
        ]
        for ok, key, why in checks:
            if not ok:
                raise _key_error(key, f"config key '{key}' {why}, got {getattr(self, key)!r}")
        weights = {
            "prompt_weight": self.prompt_weight,
            "response_weight": self.response_weight,
            "plw": self.plw,
            **{f"role_weights.{r}": w for r, w in self.role_weights.items()},
        }
        for key, w in weights.items():
            try:
                warnings = check_weight_range(
                    {f"config key '{key}'": w}, self.allow_weight_above_one, "set allow_weight_above_one: true"
                )
            except ConfigError as e:
                raise _key_error(key.split(".")[0], str(e)) from None
            for warning in warnings:
                print(f"warning: {warning}", file=sys.stderr)
        normalization_value(self.normalization)
        from witune.loss.chunked import BACKENDS

        if self.loss_backend not in BACKENDS:
            raise ConfigError(f"config key 'loss_backend' must be one of {BACKENDS}, got {self.loss_backend!r}")
        return self

    def role_weights_obj(self):
        """The `RoleWeights` these loss settings mean (PLW overrides prompt/response)."""
        from witune.data import RoleWeights

        return RoleWeights(*weight_pair(self.prompt_weight, self.response_weight, self.plw), dict(self.role_weights))


def _key_error(key: str, message: str) -> ConfigError:
    """A ConfigError that knows its key, so `load_config` can say which file and line (or --set) gave it."""
    err = ConfigError(message)
    err.key = key  # type: ignore[attr-defined]
    return err


def _formats() -> tuple[str, ...]:
    from witune.data.formats import FORMATS

    return tuple(FORMATS)


def _templates() -> tuple[str, ...]:
    from witune.data.render import TEMPLATES

    return TEMPLATES


def normalization_value(value: str) -> str | float:
    """'nonzero' / 'weight_sum' / 'tokens', or a positive number given as text."""
    from witune.loss import NORMALIZATIONS

    if value in NORMALIZATIONS:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (number > 0 and math.isfinite(number)):
        raise ConfigError(
            f"config key 'normalization' must be one of {NORMALIZATIONS} or a positive number, got {value!r}"
        )
    return number


@cache
def field_docs() -> dict[str, str]:
    """{field name: its attribute docstring}, read from this module's source with `ast`."""
    tree = ast.parse(inspect.getsource(TrainConfig))
    body = tree.body[0].body  # type: ignore[attr-defined]
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


def _types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _coerce(key: str, value: Any, where: str) -> Any:
    """Check/convert one value to the field's type; errors name the key and where the value came from."""
    hint = _types()[key]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = (
        next((a for a in args if a is not type(None)), hint) if args and typing.get_origin(hint) is not dict else hint
    )
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: key '{key}' cannot be null")
    bad = ConfigError(f"{where}: key '{key}' expects {_type_name(hint)}, got {value!r}")
    if base is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if base is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise bad
        return int(value)
    if base is float:
        if isinstance(value, str):  # YAML 1.1 reads '1e-5' (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if base is str:
        if isinstance(value, (dict, list)):
            raise bad
        return str(value)
    if typing.get_origin(base) is dict:
        if not isinstance(value, dict):
            raise bad
        try:
            return {str(k): float(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise bad from None
    raise bad


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _apply(values: dict[str, Any], updates: dict[str, Any], where: str) -> None:
    valid = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = [k for k in updates if k not in valid]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(valid)}")
    for k, v in updates.items():
        values[k] = _coerce(k, v, where)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['lr=1e-4', 'role_weights={system: 0}'] -> dict; values are parsed as YAML scalars/mappings."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = load_yaml_text(raw, "--set") if raw.strip() else None
        except ConfigError:
            out[key.strip()] = raw  # an unparsable value is taken as a plain string, then type-checked
    return out


def load_config(
    path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None, preset: str | None = None
) -> TrainConfig:
    """Defaults < preset < YAML at `path` < overrides. Unknown keys and wrong types raise ConfigError."""
    file_values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        loaded = load_yaml_file(p)
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
    try:
        return TrainConfig(**values).validate()
    except ConfigError as e:
        key = getattr(e, "key", None)
        if key in set_values:
            raise ConfigError(f"--set {key}: {e}") from None
        if key in file_values and path is not None:
            line = key_lines(Path(path)).get(key)
            raise ConfigError(f"{path}{f', line {line}' if line else ''}: {e}") from None
        raise


def to_yaml(config: TrainConfig, comments: bool = True) -> str:
    """The config as YAML, every key preceded by its docstring as a comment (an annotated example)."""
    docs = field_docs()
    lines = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if comments:
            lines.append(f"# {docs.get(f.name, '')}")
        dumped = yaml.safe_dump({f.name: value}, default_flow_style=True, sort_keys=False, width=10_000).strip()
        lines.append(dumped[1:-1] if dumped.startswith("{") else dumped)  # flow style wraps in {...}
    return "\n".join(lines) + "\n"


def config_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
