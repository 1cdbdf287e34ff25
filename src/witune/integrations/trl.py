"""TRL's `SFTTrainer` with prompt/response weights: `WeightedSFTTrainer`, a drop-in subclass.

    trainer = WeightedSFTTrainer(model=..., args=SFTConfig(...), train_dataset=ds, processing_class=tok,
                                 prompt_weight=0.1, response_weight=1.0, normalization="nonzero")

What stays TRL's: dataset preparation (prompt/completion, conversational prompt/completion, messages with
`assistant_only_loss`, ChatML conversion, EOS, truncation), packing (`pack_dataset`, any strategy),
padding-free batches, the fused LM head that never builds the (tokens x vocab) logits, everything else.
What changes:
- after TRL has built its labels as if `completion_only_loss=True`, a token is a *response* token when TRL
  would train on it (the completion, or the assistant tokens) and a prompt token otherwise; it gets
  `response_weight` or `prompt_weight`, and its label is kept exactly where that weight is non-zero. At
  (0, 1) the labels are therefore TRL's own `completion_only_loss` labels and the loss is TRL's loss;
- the `loss_weights` / `response_mask` columns go through packing and `WeightedCollator`;
- the loss is sum(w * (-log p)) over TRL's fused per-token log-probabilities, divided by the normaliser of
  the whole optimizer step (`witune.integrations.hf_trainer`).
A dataset already prepared by `witune.integrations.weighted_dataset` (any format witune reads, witune's exact
rendering, per-role weights) is used as it is (TRL sees `input_ids` and skips its own preparation).
Messages data without `assistant_only_loss` has no prompt/response split in TRL: every token is then a
response token; use `weighted_dataset` (or `assistant_only_loss=True`) to weight prompts there.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

try:
    from trl import SFTTrainer
    from trl.data_utils import get_dataset_column_names, pack_dataset
except ImportError as e:  # an optional extra: say how to get it
    raise ImportError(f"witune.integrations.trl needs TRL >= 1.16: pip install 'witune[trl]' ({e})") from e

if TYPE_CHECKING:
    from trl import SFTConfig

from witune.data import RoleWeights
from witune.integrations.collate import WeightedCollator
from witune.integrations.hf_trainer import WeightedLossMixin
from witune.loss import IGNORE_INDEX, LossSums

log = logging.getLogger(__name__)
WEIGHT_COLUMNS = ["input_ids", "labels", "loss_weights", "response_mask"]


def add_weight_columns(example: dict[str, Any], prompt_weight: float, response_weight: float) -> dict[str, Any]:
    """TRL labels (built with completion-only masking) -> loss_weights, response_mask and weight-aware labels."""
    response = [label != IGNORE_INDEX for label in example["labels"]]
    weights = [response_weight if r else prompt_weight for r in response]
    if weights:
        weights[0] = 0.0  # nothing predicts the first token
    labels = [t if w != 0 else IGNORE_INDEX for t, w in zip(example["input_ids"], weights)]
    return {"labels": labels, "loss_weights": weights, "response_mask": response}


# TRL types `_BaseTrainer.loss_is_scaled_for_ga = None` as None, not bool | None as transformers does: the
# mixin's True is what both read at run time.
class WeightedSFTTrainer(WeightedLossMixin, SFTTrainer):  # type: ignore[misc]  # TRL's None-typed class attribute
    """`trl.SFTTrainer` with lambda_p (`prompt_weight`), lambda_r (`response_weight`) and a step normaliser."""

    if TYPE_CHECKING:
        args: SFTConfig  # SFTTrainer.__init__ turns any TrainingArguments into an SFTConfig

    def __init__(
        self,
        *args: Any,
        prompt_weight: float = 0.0,
        response_weight: float = 1.0,
        normalization: str | float = "nonzero",
        **kwargs: Any,
    ):
        self.witune_weights = RoleWeights(prompt_weight, response_weight)  # validates (both zero is an error)
        own_collator = kwargs.get("data_collator") is None
        super().__init__(*args, normalization=normalization, **kwargs)
        if own_collator:  # TRL's collator would drop the weight columns
            multiple = self.args.pad_to_multiple_of
            assert not isinstance(multiple, str)  # SFTConfig.__post_init__ resolves "auto" to an int or None
            self.data_collator = WeightedCollator(
                self._tokenizer.pad_token_id, padding_free=self.padding_free, pad_to_multiple_of=multiple
            )

    def _prepare_dataset(
        self, dataset: Any, processing_class: Any, args: Any, packing: bool, formatting_func: Any, dataset_name: str
    ) -> Any:
        if "loss_weights" in get_dataset_column_names(dataset):
            prepared = dataset  # weighted_dataset rows: witune's rendering, truncation and weights
            if args.shuffle_dataset and not packing:
                prepared = prepared.shuffle(seed=args.seed)
        else:
            saved = self.completion_only_loss
            self.completion_only_loss = True  # labels then mark exactly the tokens TRL would train on at (0, 1)
            try:
                prepared = super()._prepare_dataset(
                    dataset, processing_class, args, False, formatting_func, dataset_name
                )
            finally:
                self.completion_only_loss = saved
            if (
                not any(c in get_dataset_column_names(dataset) for c in ("prompt", "completion"))
                and not args.assistant_only_loss
            ):
                log.warning(
                    "%s: language-modeling data without a completion or assistant mask: every token is a "
                    "response token (prompt_weight has no effect); use witune.integrations.weighted_dataset "
                    "or assistant_only_loss=True to weight prompts",
                    dataset_name,
                )
            prepared = prepared.map(
                add_weight_columns,
                fn_kwargs={
                    "prompt_weight": self.witune_weights.prompt,
                    "response_weight": self.witune_weights.response,
                },
            )
        if packing:
            if args.max_length is None:
                raise ValueError("When packing is enabled, `max_length` can't be `None`.")
            prepared = pack_dataset(prepared.select_columns(WEIGHT_COLUMNS), args.max_length, args.packing_strategy)
            if args.shuffle_dataset:
                prepared = prepared.shuffle(seed=args.seed)
        return prepared

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
        inputs = dict(inputs)
        weights = inputs.pop("loss_weights")
        response = inputs.pop("response_mask", None)
        for k in ("roles", "seq_lengths", "seq_idx"):
            inputs.pop(k, None)
        inputs["use_cache"] = False
        # TRL's fused head: per-token log p of every label, zero where the label is -100, no full logits.
        outputs = model(**inputs, fused_lm_head=True)
        labels = inputs["labels"][..., 1:]
        valid = (labels != IGNORE_INDEX).reshape(-1)
        w = torch.where(valid, weights[..., 1:].reshape(-1).to(torch.float32), 0.0)
        nll = -outputs.log_probs.reshape(-1)
        weighted_sum = (nll.float() * w).sum()
        resp = None if response is None else response[..., 1:].reshape(-1)
        sums = LossSums.from_rows(weighted_sum, nll.detach().float(), w, valid, resp)
        loss = self.weighted_loss(sums, num_items_in_batch if model.training else None)
        if return_outputs:
            with torch.no_grad():
                outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            return loss, outputs
        return loss
