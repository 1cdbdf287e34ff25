"""The weighted loss in transformers' `Trainer`, normalised over the whole optimizer step as `witune train` does.

How the Trainer runs one optimizer step (transformers 5.x, `Trainer._inner_training_loop`): `get_batch_samples`
fetches all gradient-accumulation micro-batches of the step first and counts `num_items_in_batch` over them
(labels != -100 after the causal shift), summed over ranks when `average_tokens_across_devices` (the default);
each micro-batch then goes through `compute_loss(..., num_items_in_batch)` and backward, unscaled when the
class says `loss_is_scaled_for_ga`. DDP averages gradients over ranks, so the loss is multiplied by the number
of processes, as the Trainer itself does.

The normaliser Z of the step:
- `nonzero` (WIT): the Trainer's own `num_items_in_batch`. It *is* the WIT count because `weighted_dataset`
  puts label -100 exactly where the weight is 0. It is used when it covers every rank (one process, or
  `average_tokens_across_devices=True`); otherwise we count it ourselves as below.
- `weight_sum`, or `nonzero` without a global Trainer count: counted here, in `get_batch_samples`, from the
  step's labels and weights (`witune.loss.normalizer_counts`, float64) and all-reduced over ranks.
- a number: used as it is.
Then every micro-batch backpropagates `sum(w * nll) / Z * processes`: the step's gradient is
d(sum over the step of w*nll)/dtheta / Z however the step is split (the gradient-accumulation bug of
per-micro-batch means, transformers #34191, cannot happen). `tokens` (witune's count of every supervised token
whatever its weight) is not offered here: zero-weight tokens carry no label in this layout.
Tested: one process and DDP (gloo). Tensor, context or sequence parallelism (ranks sharing one batch) are not
supported: the count and the x-processes factor would both count replicated ranks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from transformers import Trainer

from witune.loss import (
    LossSums,
    normalizer_counts,
    normalizer_from_counts,
    safe_divide,
    weighted_nll,
)

INTEGRATION_NORMALIZATIONS = ("nonzero", "weight_sum")
_DIAGNOSTICS = ("prompt_nll", "prompt_tokens", "response_nll", "response_tokens")
_MODEL_EXTRA = ("loss_weights", "response_mask", "roles", "seq_lengths")


def causal_lm_loss_sums(
    logits: torch.Tensor, labels: torch.Tensor, loss_weights: torch.Tensor, response_mask: torch.Tensor | None = None
) -> LossSums:
    """`witune.loss.weighted_nll` for unshifted (Hugging Face) labels: logits[:, t] predicts labels[:, t+1]."""
    resp = None if response_mask is None else response_mask[..., 1:]
    return weighted_nll(logits[..., :-1, :], labels[..., 1:], loss_weights[..., 1:], resp)


def check_normalization(normalization: str | float) -> str | float:
    if isinstance(normalization, str):
        if normalization not in INTEGRATION_NORMALIZATIONS:
            raise ValueError(
                f"normalization {normalization!r} is not available in the Trainer integration; choose "
                f"one of {INTEGRATION_NORMALIZATIONS} or a positive number"
            )
        return normalization
    if not float(normalization) > 0:
        raise ValueError(f"an external normaliser must be positive, got {normalization}")
    return float(normalization)


if TYPE_CHECKING:
    # The mixin always sits before a Trainer in the MRO: to the type checker it *is* one, so `self.args`,
    # `self.accelerator` and the super() calls are checked against transformers' own definitions.
    _TrainerBase = Trainer
else:
    _TrainerBase = object


class WeightedLossMixin(_TrainerBase):
    """Put before a `Trainer` subclass (`class T(WeightedLossMixin, Trainer)`): weighted loss, step normaliser.

    The batches must carry `labels` and `loss_weights` (and optionally `response_mask`) as `weighted_dataset`
    and `WeightedCollator` produce them. Logs `prompt_nll` / `response_nll` (mean NLL per token of each role,
    summed over ranks) next to the loss.
    """

    loss_is_scaled_for_ga = True  # our loss is already divided by the whole step's normaliser

    def __init__(self, *args: Any, normalization: str | float = "nonzero", **kwargs: Any):
        self.witune_normalization = check_normalization(normalization)
        self._witune_logged: torch.Tensor | None = None
        super().__init__(*args, **kwargs)
        if self.args.n_gpu > 1:
            raise ValueError(
                "the weighted loss does not support nn.DataParallel (several GPUs in one process): "
                "launch with torchrun or accelerate launch"
            )

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        # Trainer.__init__ assigns None, so the checker types the attribute as None; the call above set a list.
        columns = cast(list[str], self._signature_columns)
        # remove_unused_columns would otherwise drop the weights: the model's forward does not take them.
        self._signature_columns = list(  # type: ignore[assignment]  # typed None by transformers (see above)
            dict.fromkeys([*columns, "labels", "loss_weights", "response_mask", "seq_lengths"])
        )

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: torch.device) -> tuple[list, Any]:
        batches, trainer_count = super().get_batch_samples(epoch_iterator, num_batches, device)
        return batches, self.step_normalizer(batches, trainer_count, device)

    def step_normalizer(self, batches: list[dict[str, Any]], trainer_count: Any, device: torch.device) -> torch.Tensor:
        """Z over every micro-batch of the step on every rank (see the module docstring for which count)."""
        norm = self.witune_normalization
        if not isinstance(norm, str):
            return torch.tensor(norm, dtype=torch.float64, device=device)
        world = self.accelerator.num_processes
        replicated = self.get_tp_size() * self.get_cp_size() * self.get_sp_size()  # ranks sharing one batch
        if (
            norm == "nonzero"
            and torch.is_tensor(trainer_count)
            and replicated == 1
            and (world == 1 or self.args.average_tokens_across_devices)
        ):
            return trainer_count
        counts = sum(normalizer_counts(b["labels"][..., 1:], b["loss_weights"][..., 1:]) for b in batches)
        counts = torch.as_tensor(counts, dtype=torch.float64).to(device)
        if world > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        return normalizer_from_counts(counts, norm)

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        inputs = dict(inputs)
        labels, weights = inputs.pop("labels"), inputs.pop("loss_weights")
        response = inputs.pop("response_mask", None)
        for k in _MODEL_EXTRA:
            inputs.pop(k, None)
        outputs = model(**inputs, use_cache=False)
        sums = causal_lm_loss_sums(outputs.logits, labels, weights, response)
        loss = self.weighted_loss(sums, num_items_in_batch if model.training else None)
        return (loss, outputs) if return_outputs else loss

    def weighted_loss(self, sums: LossSums, step_normalizer: Any) -> torch.Tensor:
        """sum(w*nll) / Z * processes with the step's Z; without one (evaluation), this batch's own mean."""
        self._witune_record(sums)
        if step_normalizer is None:
            z = sums.normalizer(self.witune_normalization)
            return safe_divide(sums.weighted_sum, z)
        z = torch.as_tensor(step_normalizer, device=sums.weighted_sum.device)
        # DDP averages gradients over the processes; Z already counts them all.
        return safe_divide(sums.weighted_sum, z) * self.accelerator.num_processes

    def _witune_record(self, sums: LossSums) -> None:
        if not torch.is_grad_enabled():
            return  # evaluation batches stay out of the training diagnostics
        row = torch.stack([getattr(sums, k).detach().to(torch.float64) for k in _DIAGNOSTICS])
        self._witune_logged = row if self._witune_logged is None else self._witune_logged + row

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self._witune_logged is not None and "loss" in logs:
            total = self._witune_logged
            if self.accelerator.num_processes > 1:
                total = self.accelerator.reduce(total.to(self.accelerator.device), reduction="sum")
            p_nll, p_tok, r_nll, r_tok = total.tolist()
            if p_tok:
                logs["prompt_nll"] = p_nll / p_tok
            if r_tok:
                logs["response_nll"] = r_nll / r_tok
            self._witune_logged = None
        super().log(logs, *args, **kwargs)


def _default_collator(processing_class: Any, padding_free: bool = False) -> Any:
    from witune.integrations.collate import WeightedCollator
    from witune.models.load import pad_token_id

    pad = pad_token_id(processing_class)
    if pad is None:
        raise ValueError("pass a data_collator or a processing_class (tokenizer) with a pad or eos token")
    return WeightedCollator(pad_token_id=pad, padding_free=padding_free)


class WeightedTrainer(WeightedLossMixin, Trainer):
    """`transformers.Trainer` with witune's weighted loss.

        trainer = WeightedTrainer(model=model, args=TrainingArguments(...), train_dataset=weighted_dataset(...),
                                  processing_class=tokenizer, normalization="nonzero")

    Without a `data_collator`, `WeightedCollator` pads (`padding_free=True` flattens instead).
    """

    def __init__(self, *args: Any, padding_free: bool = False, **kwargs: Any):
        if kwargs.get("data_collator") is None:
            kwargs["data_collator"] = _default_collator(kwargs.get("processing_class"), padding_free)
        super().__init__(*args, **kwargs)
