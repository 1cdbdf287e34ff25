"""TRL's `SFTTrainer` with prompt/response weights: `WeightedSFTTrainer`, a drop-in subclass.

    trainer = WeightedSFTTrainer(model=..., args=SFTConfig(...), train_dataset=ds, processing_class=tok,
                                 prompt_weight=0.1, response_weight=1.0, normalization="nonzero")

What stays TRL's: dataset preparation (prompt/completion, conversational prompt/completion, messages with
`assistant_only_loss`, ChatML conversion, EOS), packing (`pack_dataset`, any strategy), padding-free batches,
the fused LM head that never builds the (tokens x vocab) logits, its metrics, everything else.
What changes:
- a token is a *response* token when stock TRL would train on it (the completion of prompt/completion data,
  the assistant tokens with `assistant_only_loss` or an `assistant_masks` column) and a prompt token where TRL
  masks it; it gets `response_weight` or `prompt_weight`, and its label is kept exactly where that weight is
  non-zero. At (0, 1) the labels are TRL's own and so is the loss;
- the data's own `labels`, when it has them, decide what is trained: a user's -100 stays -100 (weight 0), the
  other tokens get `response_weight` (as in stock TRL, which leaves such labels as they are);
- `completion_only_loss=False` trains the whole sequence as stock TRL does: prompt tokens at `response_weight`
  (the response mask still marks the completion, for the per-role diagnostics);
- truncation to `max_length` (not when packing, as TRL) and the dropping of examples left with nothing to
  train are done here, after the weights exist, on every aligned column; shuffling as TRL orders it;
- the loss is sum(w * f * (-log p)) over TRL's fused per-token log-probabilities, divided by the normaliser of
  the whole optimizer step (`witune.integrations.hf_trainer`); f is the dynamic weight (1 without one).

Every SFTConfig setting that changes the loss is honoured, composed with the weights:
`loss_type="dft"` (witune's `DFT` dynamic weight: each token's loss times its detached probability; equal to
TRL's DFT at (0, 1)); `label_smoothing_factor` (from the full logits, as TRL does); a Mixture-of-Experts router
loss (`router_aux_loss_coef`, TRL's own switch and coefficient, added per micro-batch over the accumulation
steps as TRL adds it); the metrics TRL logs (`entropy`, `mean_token_accuracy`, `num_tokens`, `aux_loss`), over
the tokens that carry a non-zero weight. Refused with one line: `compute_loss_func` (it replaces the loss),
`prompt_weight` where nothing is a prompt token (language-modeling data without a completion or assistant mask,
data with its own labels, `completion_only_loss=False`), `skip_prepare_dataset` on data without `loss_weights`.
A dataset already prepared by `witune.integrations.weighted_dataset` (any format witune reads, witune's exact
rendering, per-role weights) is used as it is, weights included (so weights given here are refused for it);
`max_length` still cuts it, as TRL cuts any tokenized data.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

import torch
from datasets import Dataset

try:
    from trl import SFTTrainer
    from trl.data_utils import get_dataset_column_names, pack_dataset
except ImportError as e:  # an optional extra: say how to get it
    raise ImportError(f"witune.integrations.trl needs TRL >= 1.16: pip install 'witune[trl]' ({e})") from e

if TYPE_CHECKING:
    from trl import SFTConfig

from witune.data.weights import build_role_weights
from witune.errors import ConfigError
from witune.integrations.collate import WeightedCollator
from witune.integrations.hf_trainer import NO_WEIGHTS, WeightedLossMixin, causal_lm_loss_sums, side_input
from witune.loss import DFT, IGNORE_INDEX, DynamicWeight, LossSums
from witune.loss.dynamic import row_factor

log = logging.getLogger(__name__)
WEIGHT_COLUMNS = ["input_ids", "labels", "loss_weights", "response_mask"]
_MASK_COLUMNS = ("completion_mask", "assistant_masks")  # consumed here once the weights exist
_ALIGNED_COLUMNS = (*WEIGHT_COLUMNS, "attention_mask", "roles")  # one value per token: truncated together


def add_weight_columns(example: dict[str, Any], prompt_weight: float, response_weight: float) -> dict[str, Any]:
    """TRL's labels -> loss_weights, response_mask and weight-aware labels.

    A labelled token (label != -100) is one TRL trains: it gets `response_weight`; every other token is a prompt
    token at `prompt_weight` (0 keeps it masked: a user's -100 stays -100). A `completion_mask` column, when TRL
    left it (completion_only_loss=False), narrows the response mask to the completion.
    """
    labelled = [label != IGNORE_INDEX for label in example["labels"]]
    completion = example.get("completion_mask")
    response = labelled if completion is None else [a and bool(c) for a, c in zip(labelled, completion)]
    weights = [response_weight if a else prompt_weight for a in labelled]
    labels = [t if w != 0 else IGNORE_INDEX for t, w in zip(example["input_ids"], weights)]
    return {"labels": labels, "loss_weights": weights, "response_mask": response}


def _truncate(example: dict[str, Any], sl: slice) -> dict[str, Any]:
    """Every per-token column of the example cut alike (an IterableDataset does not list its columns)."""
    return {c: example[c][sl] for c in _ALIGNED_COLUMNS if c in example}


def _has_target(example: dict[str, Any]) -> bool:
    return any(label != IGNORE_INDEX for label in example["labels"])


# TRL types `_BaseTrainer.loss_is_scaled_for_ga = None` as None, not bool | None as transformers does: the
# mixin's True is what both read at run time.
class WeightedSFTTrainer(WeightedLossMixin, SFTTrainer):  # type: ignore[misc]  # TRL's None-typed class attribute
    """`trl.SFTTrainer` with lambda_p (`prompt_weight`), lambda_r (`response_weight`) and a step normaliser.

    `prompt_weight=None` / `response_weight=None` (the defaults) mean 0 and 1; given explicitly, a prompt weight
    must have prompt tokens to weight, and neither may be given for rows that carry their own `loss_weights`
    (`weighted_dataset`). Weights above 1 need `allow_weight_above_one=True`, as on the command line."""

    if TYPE_CHECKING:
        args: SFTConfig  # SFTTrainer.__init__ turns any TrainingArguments into an SFTConfig

    def __init__(
        self,
        *args: Any,
        prompt_weight: float | None = None,
        response_weight: float | None = None,
        normalization: str | float = "nonzero",
        dynamic_weight: str | DynamicWeight | None = None,
        allow_weight_above_one: bool = False,
        **kwargs: Any,
    ):
        named = {"prompt_weight": prompt_weight, "response_weight": response_weight}
        # both zero is an error
        self.witune_weights, warned = build_role_weights(
            prompt_weight, response_weight, allow_above_one=allow_weight_above_one
        )
        for warning in warned:
            log.warning(warning)
        self.witune_prompt_weight_given = prompt_weight is not None
        self.witune_weights_given = [k for k, v in named.items() if v is not None]
        own_collator = kwargs.get("data_collator") is None
        super().__init__(*args, normalization=normalization, dynamic_weight=dynamic_weight, **kwargs)
        if self._skip_prepare_dataset:
            datasets = {"train": self.train_dataset}
            if isinstance(self.eval_dataset, dict):
                datasets.update(self.eval_dataset)
            elif self.eval_dataset is not None:
                datasets["eval"] = self.eval_dataset
            for name, ds in datasets.items():
                if ds is not None and "loss_weights" not in (get_dataset_column_names(ds) or []):
                    raise ConfigError(
                        f"dataset_kwargs={{'skip_prepare_dataset': True}} skips the step that adds loss_weights, and "
                        f"the {name} dataset has none: build it with witune.integrations.weighted_dataset"
                    )
        if own_collator:  # TRL's collator would drop the weight columns
            multiple = self.args.pad_to_multiple_of
            assert not isinstance(multiple, str)  # SFTConfig.__post_init__ resolves "auto" to an int or None
            self.data_collator = WeightedCollator(
                self._tokenizer.pad_token_id, padding_free=self.padding_free, pad_to_multiple_of=multiple
            )

    def _witune_resolve_dynamic(self, rule: DynamicWeight | None) -> DynamicWeight | None:
        if self.args.loss_type != "dft":
            return rule
        if rule is not None and not isinstance(rule, DFT):
            raise ConfigError(f"loss_type='dft' and dynamic_weight={rule.name!r} contradict each other: use one")
        return rule or DFT()

    def _prepare_dataset(
        self, dataset: Any, processing_class: Any, args: Any, packing: bool, formatting_func: Any, dataset_name: str
    ) -> Any:
        columns = get_dataset_column_names(dataset) or []
        if "loss_weights" in columns:
            if self.witune_weights_given:
                raise ConfigError(
                    f"{dataset_name} dataset already has loss_weights (weighted_dataset): "
                    f"{' and '.join(self.witune_weights_given)} would not apply; set the weights when building it"
                )
            prepared = dataset  # weighted_dataset rows: witune's rendering and weights
        else:
            prepared = self._prepare_with_weights(dataset, processing_class, args, formatting_func, dataset_name)
        map_kwargs: dict[str, Any] = {}
        if isinstance(prepared, Dataset):  # an IterableDataset takes no num_proc
            map_kwargs["num_proc"] = args.dataset_num_proc
        if args.max_length is not None and not packing:
            if args.truncation_mode not in ("keep_start", "keep_end"):
                raise ConfigError(f"truncation_mode must be 'keep_start' or 'keep_end', got {args.truncation_mode!r}")
            sl = slice(None, args.max_length) if args.truncation_mode == "keep_start" else slice(-args.max_length, None)
            prepared = prepared.map(_truncate, fn_kwargs={"sl": sl}, **map_kwargs)
            prepared = prepared.filter(_has_target, **map_kwargs)  # as TRL: nothing left to train after truncation
        if packing:
            if args.max_length is None:
                raise ValueError("When packing is enabled, `max_length` can't be `None`.")
            prepared = prepared.select_columns(WEIGHT_COLUMNS)
            if args.shuffle_dataset:
                prepared = prepared.shuffle(seed=args.seed)
            prepared = pack_dataset(prepared, args.max_length, args.packing_strategy, map_kwargs)
        if args.shuffle_dataset:
            prepared = prepared.shuffle(seed=args.seed)
        return prepared

    def _prepare_with_weights(
        self, dataset: Any, processing_class: Any, args: Any, formatting_func: Any, dataset_name: str
    ) -> Any:
        """TRL's preparation up to its labels (no truncation, packing or shuffle: done after the weights exist),
        with completion-only labels unless the user turned them off; then the weight columns."""
        columns = get_dataset_column_names(dataset) or []
        own_labels = "labels" in columns
        completion_data = ("prompt" in columns and "completion" in columns) or "completion_mask" in columns
        # The split TRL itself makes (self.completion_only_loss is TRL's own, resolved from the data when unset):
        # masked tokens are prompt tokens, except where the data's own labels do the masking.
        has_prompt = not own_labels and (
            (completion_data and bool(self.completion_only_loss) and formatting_func is None)
            or args.assistant_only_loss
            or "assistant_masks" in columns
        )
        given = self.witune_weights.prompt if self.witune_prompt_weight_given else None
        if given and not has_prompt and given != self.witune_weights.response:
            why = (
                "the dataset's own labels decide what is trained"
                if own_labels
                else "completion_only_loss=False trains the prompt like the completion, at response_weight"
                if completion_data
                else "language-modeling data without a completion or assistant mask has no prompt tokens"
            )
            raise ConfigError(
                f"{dataset_name} dataset: prompt_weight={given:g} has nothing to weight: {why}; build the data "
                "with witune.integrations.weighted_dataset (or use prompt/completion data, assistant_only_loss=True)"
            )
        trl_args = copy.copy(args)
        trl_args.max_length, trl_args.shuffle_dataset = None, False
        prepared = super()._prepare_dataset(dataset, processing_class, trl_args, False, formatting_func, dataset_name)
        prompt_weight = self.witune_weights.prompt if has_prompt else 0.0  # else unlabelled tokens stay masked
        drop = [c for c in _MASK_COLUMNS if c in (get_dataset_column_names(prepared) or [])]
        return prepared.map(
            add_weight_columns,
            fn_kwargs={"prompt_weight": prompt_weight, "response_weight": self.witune_weights.response},
            remove_columns=drop or None,
        )

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = [  # type: ignore[assignment]  # transformers types the attribute as None
                "input_ids",
                "attention_mask",
                "labels",
                "loss_weights",
                "response_mask",
                "seq_lengths",
            ]

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        mode = "train" if model.training else "eval"
        inputs = dict(inputs)
        if "loss_weights" not in inputs:
            raise ValueError(NO_WEIGHTS.format(columns=sorted(inputs)))
        weights = inputs.pop("loss_weights")
        response = inputs.pop("response_mask", None)
        for k in ("roles", "seq_lengths", "seq_idx"):
            inputs.pop(k, None)
        inputs["use_cache"] = False
        if self.aux_loss_enabled:  # TRL's switch and coefficient (router_aux_loss_coef, the model's by default)
            inputs["output_router_logits"] = True
        labels = inputs["labels"]
        rule = self.witune_dynamic
        side = side_input(rule, inputs, labels)
        logits_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        aux = None
        if self.args.label_smoothing_factor > 0:
            # Smoothing needs every logit: the full forward, as TRL; the fused head then only feeds the metrics.
            full = model(**logits_inputs)
            sums = causal_lm_loss_sums(
                full.logits, labels, weights, response, label_smoothing=self.args.label_smoothing_factor
            )
            aux = getattr(full, "aux_loss", None)
            with torch.no_grad():
                outputs = model(**inputs, fused_lm_head=True)
        else:
            # TRL's fused head: per-token log p of every label, zero where the label is -100, no full logits.
            outputs = model(**inputs, fused_lm_head=True)
            sums = self._fused_sums(outputs, labels, weights, response, rule, side)
            aux = outputs.aux_loss
        step_z = num_items_in_batch if model.training else None
        loss = self.weighted_loss(sums, step_z)
        if self.aux_loss_enabled and aux is not None:
            loss = loss + self.router_aux_term(aux, self.router_aux_loss_coef, step_z)
        self._witune_trl_metrics(outputs, inputs, mode)
        if return_outputs:
            with torch.no_grad():
                outputs = model(**logits_inputs)
            return loss, outputs
        return loss

    @staticmethod
    def _fused_sums(
        outputs: Any,
        labels: torch.Tensor,
        weights: torch.Tensor,
        response: torch.Tensor | None,
        rule: DynamicWeight | None,
        side: torch.Tensor | None,
    ) -> LossSums:
        """LossSums from the fused head's per-token log-probabilities (rows = positions 1.. of each row)."""
        valid = (labels[..., 1:] != IGNORE_INDEX).reshape(-1)
        w = torch.where(valid, weights[..., 1:].reshape(-1).to(torch.float32), 0.0)
        nll = -outputs.log_probs.reshape(-1).float()
        w_eff = w
        if rule is not None:
            entropy = outputs.entropy.reshape(-1) if rule.needs_entropy else None
            w_eff = w * row_factor(rule, nll, entropy, None if side is None else side[..., :-1].reshape(-1))
        parts = nll * w_eff
        resp = None if response is None else response[..., 1:].reshape(-1)
        return LossSums.from_rows(parts.sum(), nll.detach(), w, valid, resp, parts.detach())

    def _witune_trl_metrics(self, outputs: Any, inputs: dict[str, Any], mode: str) -> None:
        """The metrics TRL's SFTTrainer logs, from the fused head's outputs, over the tokens that have a label."""
        gather = self.accelerator.gather_for_metrics
        num_valid = gather(outputs.label_mask.sum()).sum()
        entropy = gather(outputs.entropy.detach().sum()).sum()
        correct = gather(outputs.is_top1.sum()).sum()
        metrics = self._metrics[mode]
        metrics["entropy"].append((entropy / num_valid).item() if num_valid > 0 else 0.0)
        metrics["mean_token_accuracy"].append((correct / num_valid).item() if num_valid > 0 else 0.0)
        if mode == "train":
            if "attention_mask" in inputs:
                seen = gather(inputs["attention_mask"].sum()).sum().item()
            else:  # padding-free: one row, its length counts (padding to a multiple included, as TRL)
                ids = inputs["position_ids"]
                seen = gather(torch.tensor(ids.size(1), device=ids.device)).sum().item()
            self._total_train_tokens += seen // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]
        if self.aux_loss_enabled and outputs.aux_loss is not None:
            metrics["aux_loss"].append(gather(outputs.aux_loss.detach()).mean().item())
