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
Tested: one process and DDP (gloo). Tensor, context or sequence parallelism (ranks sharing one batch) are
refused: the count and the x-processes factor would both count replicated ranks.

Trainer settings that change the loss are honoured, composed with the weights:
- `label_smoothing_factor` eps: each token's loss is (1 - eps) * nll + eps * mean_v(-log p_v) (transformers'
  `LabelSmoother`), times its weight, over the same Z;
- a Mixture-of-Experts model that returns its router load-balancing loss (`output_router_logits` in its config):
  `router_aux_loss_coef * aux_loss` is added to each micro-batch's loss, divided by the accumulation steps (the
  mean over the step's micro-batches, as TRL does; transformers' own Trainer adds it once per micro-batch);
- `dynamic_weight` (a `witune.loss.DynamicWeight` or its name, e.g. "dft"): a detached per-token factor on top of
  the weights, in the same loss (see `witune.loss.dynamic`).
- `hyperparameter_search` (Optuna, Ray): `prompt_weight` / `response_weight` in the search space multiply the
  data's per-role weights for that trial (`set_role_weights`; build the data at 1 and 1).
`compute_loss_func` would replace the weighted loss altogether: it is refused, as are label smoothing together
with a dynamic weight (no definition to follow: TRL drops the smoothing under DFT) and nn.DataParallel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import torch
from transformers import Trainer

from witune.errors import ConfigError
from witune.integrations.collate import check_rows
from witune.loss import (
    IGNORE_INDEX,
    DynamicWeight,
    LossSums,
    normalizer_counts,
    normalizer_from_counts,
    parse_normalization,
    safe_divide,
    weighted_nll,
)
from witune.loss import dynamic_weight as resolve_dynamic_weight  # the name `dynamic_weight` is an argument here

INTEGRATION_NORMALIZATIONS = ("nonzero", "weight_sum")
_DIAGNOSTICS = ("prompt_nll", "prompt_tokens", "response_nll", "response_tokens")
_MODEL_EXTRA = ("loss_weights", "response_mask", "roles", "seq_lengths")
HP_WEIGHT_KEYS = ("prompt_weight", "response_weight")  # search-space keys the Trainer itself would drop


def causal_lm_loss_sums(
    logits: torch.Tensor,
    labels: torch.Tensor,
    loss_weights: torch.Tensor,
    response_mask: torch.Tensor | None = None,
    *,
    dynamic: DynamicWeight | None = None,
    side: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> LossSums:
    """`witune.loss.weighted_nll` for unshifted (Hugging Face) labels: logits[:, t] predicts labels[:, t+1].
    `side`: a dynamic weight's input aligned with the logits (as `aligned_labels`)."""
    resp = None if response_mask is None else response_mask[..., 1:]
    return weighted_nll(
        logits[..., :-1, :],
        labels[..., 1:],
        loss_weights[..., 1:],
        resp,
        dynamic=dynamic,
        side=None if side is None else side[..., :-1],
        label_smoothing=label_smoothing,
    )


def aligned_labels(labels: torch.Tensor) -> torch.Tensor:
    """Unshifted labels -> the label each logits position predicts (-100 at the last): what a dynamic weight's
    `side_input` is given, the same in every loop."""
    return torch.cat([labels[..., 1:], torch.full_like(labels[..., :1], IGNORE_INDEX)], dim=-1)


def side_input(rule: DynamicWeight | None, inputs: Mapping[str, Any], labels: torch.Tensor) -> torch.Tensor | None:
    """The rule's per-token input for one micro-batch (None without a rule), aligned with the logits."""
    if rule is None:
        return None
    model_inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
    with torch.no_grad():
        return rule.side_input(model_inputs, aligned_labels(labels))


def check_normalization(normalization: Any) -> str | float:
    """The API edge's check of a normaliser: `witune.loss.parse_normalization`, then the names the Trainer
    integration implements."""
    try:
        parsed = parse_normalization(normalization)
    except ValueError as e:
        raise ConfigError(f"normalization {e}, got {normalization!r}") from None
    if isinstance(parsed, str) and parsed not in INTEGRATION_NORMALIZATIONS:
        raise ConfigError(
            f"normalization {normalization!r} is not available in the Trainer integration; choose "
            f"one of {INTEGRATION_NORMALIZATIONS} or a positive number"
        )
    return parsed


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

    def __init__(
        self,
        *args: Any,
        normalization: str | float = "nonzero",
        dynamic_weight: str | DynamicWeight | None = None,
        **kwargs: Any,
    ):
        self.witune_normalization = check_normalization(normalization)
        rule = resolve_dynamic_weight(dynamic_weight)
        if kwargs.get("compute_loss_func") is not None:
            raise ConfigError(
                "compute_loss_func replaces the loss, so the loss weights would not apply: leave it out (the "
                "weighted loss is this trainer's loss), or subclass and override weighted_loss"
            )
        self._witune_logged: torch.Tensor | None = None
        self.witune_role_weights: tuple[float, float] | None = None  # set by a search trial (set_role_weights)
        super().__init__(*args, **kwargs)
        if self.args.n_gpu > 1:
            raise ConfigError(
                "the weighted loss does not support nn.DataParallel (several GPUs in one process): "
                "launch with torchrun or accelerate launch"
            )
        if self.get_tp_size() * self.get_cp_size() * self.get_sp_size() > 1:
            raise ConfigError(
                "the weighted loss does not support tensor, context or sequence parallelism (ranks sharing one "
                "batch): its step normaliser would count the shared tokens once per rank"
            )
        self.witune_dynamic = self._witune_resolve_dynamic(rule)
        if self.witune_dynamic is not None and self.args.label_smoothing_factor > 0:
            raise ConfigError(
                f"label_smoothing_factor={self.args.label_smoothing_factor:g} with the dynamic weight "
                f"{self.witune_dynamic.name!r} is not defined (TRL drops the smoothing under loss_type='dft'): "
                "use one of them"
            )

    def _witune_resolve_dynamic(self, rule: DynamicWeight | None) -> DynamicWeight | None:
        """The dynamic weight in force (a subclass maps its own settings, e.g. TRL's loss_type, here)."""
        return rule

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
        if self.witune_role_weights is not None:  # a search trial's weights: the labels change, count again
            batches, trainer_count = [self._witune_reweight(b) for b in batches], None
        return batches, self.step_normalizer(batches, trainer_count, device)

    def set_role_weights(self, prompt_weight: float, response_weight: float) -> None:
        """Multiply every prompt token's weight by `prompt_weight` and every response token's by `response_weight`
        (the rows' `response_mask` tells them apart), from the next step on. What a hyperparameter search trial
        sets: build the data with both weights at 1 (`weighted_dataset(..., prompt_weight=1.0)`), so that the
        trial's weights are the weights trained."""
        p, r = float(prompt_weight), float(response_weight)
        if not (p >= 0 and r >= 0 and p + r > 0 and p + r < float("inf")):
            raise ConfigError(f"prompt_weight={p:g}, response_weight={r:g}: weights must be >= 0, finite, not both 0")
        self.witune_role_weights = (p, r)

    def _witune_reweight(self, batch: dict[str, Any]) -> dict[str, Any]:
        assert self.witune_role_weights is not None
        p, r = self.witune_role_weights
        if "response_mask" not in batch:
            raise ConfigError("searching prompt_weight / response_weight needs the rows' response_mask column")
        weights, response = batch["loss_weights"], batch["response_mask"].bool()
        if p > 0 and not bool((weights[~response] > 0).any()):
            raise ConfigError(
                f"prompt_weight={p:g} in the search, but no prompt token of the data has a weight to scale: build "
                "the data with weighted_dataset(..., prompt_weight=1.0, response_weight=1.0)"
            )
        scaled = weights * torch.where(response, r, p).to(weights.dtype)
        labels = batch["labels"].masked_fill(scaled == 0, IGNORE_INDEX)  # -100 exactly where the weight is 0
        return {**batch, "loss_weights": scaled, "labels": labels}

    def _hp_search_setup(self, trial: Any) -> None:
        """transformers' `hyperparameter_search` sets a trial's values on `TrainingArguments` and warns and skips
        every other key, so `prompt_weight` / `response_weight` in a search space would silently not be searched:
        they are taken here (`set_role_weights`) and the rest goes on as usual (Optuna, Ray, W&B backends)."""
        if getattr(self, "hp_search_backend", None) is None or trial is None:
            return super()._hp_search_setup(trial)
        from transformers.trainer_utils import HPSearchBackend

        if self.hp_search_backend == HPSearchBackend.OPTUNA:
            params, space = dict(self.hp_space(trial)), self.hp_space
            self.hp_space = lambda t: {k: v for k, v in params.items() if k not in HP_WEIGHT_KEYS}
            try:
                super()._hp_search_setup(trial)
            finally:
                self.hp_space = space
        else:
            params = dict(trial)
            super()._hp_search_setup({k: v for k, v in params.items() if k not in HP_WEIGHT_KEYS})
            self._trial = trial
        if any(k in params for k in HP_WEIGHT_KEYS):
            self.set_role_weights(params.get("prompt_weight", 1.0), params.get("response_weight", 1.0))

    def step_normalizer(self, batches: list[dict[str, Any]], trainer_count: Any, device: torch.device) -> torch.Tensor:
        """Z over every micro-batch of the step on every rank (see the module docstring for which count).

        The batches are checked first, whatever collator made them (`check_rows`), and a step in which no token
        has a non-zero weight is an error: it would train a loss of 0.0 without a word."""
        for b in batches:
            if "loss_weights" not in b:
                raise ValueError(NO_WEIGHTS.format(columns=sorted(b)))
            check_rows(b["labels"], b["loss_weights"])
        counts = sum(normalizer_counts(b["labels"][..., 1:], b["loss_weights"][..., 1:]) for b in batches)
        counts = torch.as_tensor(counts, dtype=torch.float64).to(device)
        world = self.accelerator.num_processes
        if world > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        if not bool(counts[0] > 0):
            raise ValueError(
                "no token of this optimizer step has a non-zero loss weight (and a label): the step would train a "
                "loss of 0.0; check the data's loss_weights and labels"
            )
        norm = self.witune_normalization
        if not isinstance(norm, str):
            return torch.tensor(norm, dtype=torch.float64, device=device)
        if (
            norm == "nonzero"
            and torch.is_tensor(trainer_count)
            and (world == 1 or self.args.average_tokens_across_devices)
        ):
            return trainer_count  # the same count (check_rows holds), as the Trainer's own device and dtype
        return normalizer_from_counts(counts, norm)

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        inputs = dict(inputs)
        if "loss_weights" not in inputs:
            raise ValueError(NO_WEIGHTS.format(columns=sorted(inputs)))
        labels, weights = inputs.pop("labels"), inputs.pop("loss_weights")
        response = inputs.pop("response_mask", None)
        for k in _MODEL_EXTRA:
            inputs.pop(k, None)
        outputs = model(**inputs, use_cache=False)
        sums = causal_lm_loss_sums(
            outputs.logits,
            labels,
            weights,
            response,
            dynamic=self.witune_dynamic,
            side=side_input(self.witune_dynamic, inputs, labels),
            label_smoothing=self.args.label_smoothing_factor,
        )
        step_z = num_items_in_batch if model.training else None
        loss = self.weighted_loss(sums, step_z)
        aux = getattr(outputs, "aux_loss", None)  # a MoE model's router loss, when its config asks for it
        if aux is not None:
            coef = getattr(self.accelerator.unwrap_model(model).config.get_text_config(), "router_aux_loss_coef", 0.0)
            loss = loss + self.router_aux_term(aux, coef, step_z)
        return (loss, outputs) if return_outputs else loss

    def router_aux_term(self, aux_loss: torch.Tensor, coef: float, step_normalizer: Any) -> torch.Tensor:
        """coef * aux over the step's micro-batches: a per-micro-batch mean, so divided by the accumulation steps
        in training (DDP's gradient average already averages it over ranks)."""
        steps = self.current_gradient_accumulation_steps if step_normalizer is not None else 1
        return coef * aux_loss / steps

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


NO_WEIGHTS = (
    "the batch has no loss_weights (columns {columns}): build the data with witune.integrations.weighted_dataset "
    "and collate it with WeightedCollator"
)


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
