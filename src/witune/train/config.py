"""`witune train` configuration: one flat dataclass, a docstring under every field, YAML + `--set` overrides.

The loader, the field docs and the checks are the config kernel's (`witune.flat_config`); the optimiser, LoRA
and runtime fields are the groups `witune dpo` shares (`witune.train.fields`). Resolution order, later wins:
field defaults < preset < YAML file < `--set key=value` overrides.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from witune import flat_config
from witune.data.collate import packing_problem, parse_packing
from witune.data.weights import build_role_weights
from witune.errors import ConfigError
from witune.flat_config import FlatConfig, at_least, one_of, optional, parse_overrides
from witune.loss.normalization import Normalization, normalization_problem
from witune.train.fields import LoraFields, OptimizerFields, RuntimeFields
from witune.train.precision import BF16_WEIGHTS_NEEDS_LORA, PRECISIONS
from witune.train.trackers import TRACKERS
from witune.train.trackers import unknown as unknown_trackers

__all__ = ["PRESETS", "TrainConfig", "config_dict", "field_docs", "load_config", "parse_overrides", "to_yaml"]

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
TRUNCATIONS = ("left", "right", "drop")
# What the `pack` field holds: the kernel (`witune.flat_config.coerce`) converts YAML true/false and names.
Packing = Annotated[str, parse_packing]


@dataclass
class _Head(FlatConfig):
    """The sections of a training run before the shared groups: model, data, loss."""

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
    pack: Packing = "none"
    """Pack several samples per row of <= max_length tokens (position ids restart per sample; attention never
    crosses samples): none; bfd (best-fit decreasing over the whole data set: fullest rows, samples reordered
    inside rows; `true` means bfd); greedy (in data order, a new row whenever the next sample does not fit: the
    packing `true` meant before bfd was added, kept to resume such runs). Packed once, before training: the seeded
    schedule then draws per_device_batch_size packed rows per micro-batch, so resume is exact. padding_free: the
    samples and steps of none, each micro-batch's samples joined into one row (no padding, no repacking)."""
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
    span_weights: dict[str, float] = field(default_factory=dict)
    """Weights multiplying the tokens of spans inside messages, e.g. {think: 0.5, tool_call: 0.2} (see
    witune.data.weights; message `weight` and record `sample_weight` fields in the data multiply too)."""
    span_markers: dict[str, list[str]] = field(default_factory=dict)
    """Delimiters [opening, closing] of span kinds beyond the defaults think and tool_call, e.g.
    {reason: ['<reason>', '</reason>']}."""
    normalization: Normalization = "nonzero"
    """Normaliser Z of each optimizer step: nonzero (tokens with weight != 0), weight_sum, tokens, or a number."""
    allow_weight_above_one: bool = False
    """Allow prompt/response/PLW/role weights above 1 (outside the papers' range [0, 1]; a warning is printed)."""
    chunked_loss: bool = False
    """Compute the loss from hidden states and the output projection in chunks, never materialising the
    (tokens x vocab) logits: the memory peak of large vocabularies. Zero-weight tokens are skipped entirely."""
    loss_backend: str = "auto"
    """Kernel of the chunked loss: auto (fused Liger / cut-cross-entropy kernel on CUDA when installed, else
    torch, and torch for batches of more than 8 distinct token weights), torch (witune's chunked autograd
    function, any device), liger or cce (that package's fused kernel; CUDA only, an error when it is not
    installed or a batch has more than 8 distinct weights). Used only with chunked_loss: true."""
    dynamic_weight: str = "none"
    """Dynamic token weight on top of the static weights: none, dft (each token's loss times its detached
    probability, arXiv 2508.05629; TRL's loss_type dft), or a rule of your own as a component path
    'package.module:Class' (a witune.loss.DynamicWeight subclass, importable where the run trains; built once
    per run with dynamic_weight_args). The normaliser stays the one above."""
    dynamic_weight_args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments the dynamic weight is built with, e.g. {alpha: 0.5} (recorded with the run: a resumed
    run and every sweep point build the same rule)."""


@dataclass
class _TrainOptimizer(OptimizerFields):
    """Optimiser settings only `witune train` has (DPO leaves them to TRL's defaults)."""

    global_batch_size: int = 0
    """Samples per optimizer step over all processes; when > 0, grad_accum = this / (batch size x processes)."""
    drop_last: bool = False
    """Drop an epoch's last, incomplete global batch (false: train on it; the normaliser counts what is there)."""
    optimizer: str = "adamw"
    """adamw or sgd."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.999
    """AdamW beta2."""
    adam_epsilon: float = 1e-8
    """AdamW epsilon."""
    grad_accum: int = 1
    """Micro-batches per optimizer step on each process (overridden by global_batch_size)."""

    RANGES = {
        "global_batch_size": at_least(0, "(0: use grad_accum)"),
        "optimizer": one_of(OPTIMIZERS),
        "adam_beta1": flat_config.interval(0, 1),
        "adam_beta2": flat_config.interval(0, 1),
        "adam_epsilon": flat_config.above(0),
    }


@dataclass
class TrainConfig(RuntimeFields, LoraFields, _TrainOptimizer, _Head):
    """Everything a training run needs. Sections: model, data, loss, optimisation, LoRA, runtime."""

    precision: str = "fp32"
    """fp32; bf16 (accelerate's bf16 autocast over fp32 master weights); or bf16_weights (LoRA only: the frozen
    base weights stored in bf16, fp32 adapters, bf16 autocast). The loss is summed in fp32 in every case."""
    fsdp: bool = False
    """Shard weights, gradients and optimizer state over the processes with torch's FSDP2 (fully_shard per
    decoder layer); works on CPU (gloo) and GPUs; checkpoints are sharded. Launch with torchrun or a DDP
    accelerate config (docs/multi_gpu.md)."""
    report_to: str = "none"
    """Trackers, comma-separated: none, tensorboard (output_dir/tensorboard), wandb (output_dir/wandb; set
    WANDB_MODE=offline to stay off the network). Main process only; metrics.jsonl is always written."""
    deterministic: bool = False
    """Use torch deterministic algorithms (bit-for-bit reproducible runs and resumes; may be slower)."""
    stop_at_step: int = 0
    """Stop after this optimizer step (0: train to the end), with a checkpoint and model/ written there; the
    learning-rate schedule stays that of the whole run (max_steps / epochs), so a later --resume without it
    continues exactly as if never stopped (the rungs of `witune sweep`'s successive halving)."""
    preset: str | None = None
    """Recipe whose values replace the defaults before the YAML is applied: alpaca or wit."""

    PRESETS = PRESETS
    TEMPLATE_VALUES = {"data": "<your data file>"}
    RANGES = {
        "truncation": one_of(TRUNCATIONS),
        "limit": optional(at_least(1)),
        "data_workers": at_least(1),
        "max_length": at_least(2),
        "pack": packing_problem,
        "normalization": normalization_problem,
        "preset": optional(one_of(sorted(PRESETS))),
        "precision": one_of(PRECISIONS),
        "stop_at_step": at_least(0, "(0: train to the end)"),
    }

    def problems(self) -> Iterator[tuple[str, str]]:
        if not self.data:
            yield "data", "is required (a data file, folder or dataset name)"
        from witune.data.formats import FORMATS
        from witune.data.render import TEMPLATES

        if self.precision == "bf16_weights" and self.lora_r <= 0:
            yield "precision", BF16_WEIGHTS_NEEDS_LORA
        if unknown_trackers(self.report_to):
            yield "report_to", f"names trackers from {TRACKERS} or none"
        if self.fsdp and self.chunked_loss:
            yield "fsdp", "cannot be combined with chunked_loss: true"
        from witune.loss.chunked import BACKENDS, missing_backend

        if self.format not in ("auto", *FORMATS):
            yield "format", f"must be auto or one of {tuple(FORMATS)}"
        if self.template not in TEMPLATES:
            yield "template", f"must be one of {TEMPLATES}"
        if self.loss_backend not in BACKENDS:
            yield "loss_backend", f"must be one of {BACKENDS}"
        from witune.loss import DYNAMIC_WEIGHTS

        names = ("none", *sorted(DYNAMIC_WEIGHTS))
        if self.dynamic_weight not in names and ":" not in self.dynamic_weight:
            yield "dynamic_weight", f"must be one of {names} or a component 'package.module:Class'"
        elif (why := _unbuildable(self.dynamic_weight, self.dynamic_weight_args)) is not None:
            yield "dynamic_weight", why
        elif self.dynamic_weight != "none" and self.chunked_loss and self.loss_backend in ("liger", "cce"):
            yield (
                "dynamic_weight",
                f"needs per-token probabilities, which loss_backend {self.loss_backend!r} does not give: "
                "use loss_backend torch or auto",
            )
        # after the contradiction above: installing the package would not make that config work
        if self.loss_backend in BACKENDS and self.chunked_loss and (missing := missing_backend(self.loss_backend)):
            yield "loss_backend", f"{missing}, which is not installed"
        yield from super().problems()

    def validate(self) -> TrainConfig:
        """Check values that no type can express; raises ConfigError naming the key."""
        super().validate()
        # ranges, unknown roles and span kinds, malformed span markers: errors keyed by the setting at fault
        for warning in self._built_weights()[1]:
            print(f"warning: {warning}", file=sys.stderr)
        return self

    def role_weights_obj(self):
        """The `RoleWeights` these loss settings mean (PLW overrides prompt/response)."""
        return self._built_weights()[0]

    def _built_weights(self):
        return build_role_weights(
            self.prompt_weight,
            self.response_weight,
            self.plw,
            self.role_weights,
            self.span_weights,
            self.span_markers,
            allow_above_one=self.allow_weight_above_one,
            hint="set allow_weight_above_one: true",
            label=lambda key, item: f"config key '{key}'" if item is None else f"config key '{key}.{item}'",
        )


def load_config(
    path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None, preset: str | None = None
) -> TrainConfig:
    """Defaults < preset < YAML at `path` < overrides. Unknown keys, wrong types and ranges raise ConfigError."""
    return TrainConfig.load(path, overrides, preset)


def to_yaml(config: TrainConfig, comments: bool = True) -> str:
    """The config as YAML, every key preceded by its docstring as a comment (an annotated example)."""
    return config.to_yaml(comments)


def field_docs() -> dict[str, str]:
    return flat_config.field_docs(TrainConfig)


def config_dict(config: Any) -> dict[str, Any]:
    """Every field of a config (a `TrainConfig`, or a `DPOConfig` built on the same field groups) by name."""
    return dataclasses.asdict(config)


def _unbuildable(spec: str, args: dict[str, Any]) -> str | None:
    """Why the dynamic weight cannot be built here (None when it can): checked when the config loads, so a rule
    that does not import or does not take its arguments fails before anything trains."""
    from witune.loss import dynamic_weight

    try:
        dynamic_weight(spec, args)
    except ConfigError as e:
        return str(e).removeprefix(f"dynamic weight {spec!r}: ")
    return None
