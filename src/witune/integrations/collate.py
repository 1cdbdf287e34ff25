"""A collator for `weighted_dataset` rows: right padding, or padding-free packing, with the weights aligned.

Why not `witune.data.collate`: that one shifts labels once for witune's own loop; here labels stay unshifted
(Hugging Face convention) because the model, TRL's fused head and the Trainer's `num_items_in_batch` all
shift them themselves. The rules are the same: padding and sample starts get label -100 and weight 0.

Padding-free (`padding_free=True`, like transformers' `DataCollatorWithFlattening`): the batch becomes one row,
samples concatenated, `position_ids` restarting at 0 for each sample (and for each packed segment of rows that
TRL's packing made, from their `seq_lengths`), no attention mask: transformers then attends within samples only.
The first token of every sample is never a target, so no loss crosses a sample boundary.

Rows are checked as they are collated (`check_rows`): weights finite and >= 0, labels -100 exactly where the
weight is 0 (except where a sequence starts: nothing predicts that token), `seq_lengths` summing to the row length.
A row that breaks the contract would train a different loss than its weights say, or a loss of 0.0, in silence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from witune.errors import ConfigError
from witune.loss import IGNORE_INDEX


@dataclass
class WeightedCollator:
    pad_token_id: int | None = None  # required: None is refused with a clear error, not a TypeError
    padding_free: bool = False
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int) or self.pad_token_id < 0:
            raise ConfigError(
                f"pad_token_id must be a token id (an int >= 0: the tokenizer's pad or eos token), "
                f"got {self.pad_token_id!r}"
            )
        multiple = self.pad_to_multiple_of
        if multiple is not None and (isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1):
            raise ConfigError(f"pad_to_multiple_of must be an int >= 1 or None, got {multiple!r}")

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if not features:
            raise ValueError("WeightedCollator got no rows to collate (an empty batch)")
        missing = [c for c in ("input_ids", "loss_weights") if c not in features[0]]
        if missing:
            raise ValueError(
                f"rows have no {' or '.join(missing)} column: build them with witune.integrations.weighted_dataset "
                f"(columns {sorted(features[0])})"
            )
        ids = [torch.as_tensor(f["input_ids"], dtype=torch.long) for f in features]
        weights = [torch.as_tensor(f["loss_weights"], dtype=torch.float32) for f in features]
        # without a labels column, the labels follow from the weights (the contract below)
        labels = [
            torch.as_tensor(f["labels"], dtype=torch.long) if "labels" in f else torch.where(w != 0, i, IGNORE_INDEX)
            for f, i, w in zip(features, ids, weights)
        ]
        resp = [
            torch.as_tensor(f["response_mask"], dtype=torch.bool)
            if "response_mask" in f
            else torch.ones(len(i), dtype=torch.bool)
            for f, i in zip(features, ids)
        ]
        for i, l, w, r in zip(ids, labels, weights, resp):
            if not (len(i) == len(l) == len(w) == len(r)):
                raise ValueError(
                    f"row with {len(i)} input_ids but {len(l)} labels, {len(w)} loss_weights, "
                    f"{len(r)} response_mask: the columns must stay aligned"
                )
        pos = [_positions(f, len(i)) for f, i in zip(features, ids)]
        for row, (l, w, p) in enumerate(zip(labels, weights, pos)):
            # padding-free, every sample's first token starts a new sequence (never a target); padded, only the row's
            starts = (p == 0)[None] if self.padding_free else None
            check_rows(l[None], w[None], starts, first_row=row)
        if self.padding_free:
            ids, labels, weights, resp, pos = ([torch.cat(x)] for x in (ids, labels, weights, resp, pos))
        length = max(len(i) for i in ids)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        out: dict[str, Any] = {  # tensors, plus the int max_length_q/k of padding-free batches
            "input_ids": _pad(ids, length, self.pad_token_id),
            "labels": _pad(labels, length, IGNORE_INDEX),
            "loss_weights": _pad(weights, length, 0.0),
            "response_mask": _pad(resp, length, False),
        }
        if not self.padding_free:
            # Packed rows stay one sequence (attention and positions run across segments), as TRL's own collator
            # treats them without padding_free: a `seq_lengths` column only matters padding-free.
            out["attention_mask"] = _pad([torch.ones_like(i) for i in ids], length, 0)
            return out
        position_ids = _pad(pos, length, 0)
        # padding at the end of a flattened row counts as one more sample (its positions restart at 0)
        n = len(pos[0])
        if length > n:
            position_ids[0, n:] = torch.arange(length - n)
        starts = position_ids == 0
        out["labels"][starts] = IGNORE_INDEX  # nothing before a sample's first token belongs to it
        out["loss_weights"][starts] = 0.0
        out["position_ids"] = position_ids
        # sequence boundaries for varlen attention kernels (flash attention), as TRL's collator gives them
        seq_starts = starts[0].nonzero().flatten()
        cu = torch.cat([seq_starts, torch.tensor([length])]).to(torch.int32)
        out["cu_seq_lens_q"] = out["cu_seq_lens_k"] = cu
        out["max_length_q"] = out["max_length_k"] = int(cu.diff().max())
        return out


def check_rows(
    labels: torch.Tensor, weights: torch.Tensor, starts: torch.Tensor | None = None, first_row: int = 0
) -> None:
    """The contract of the Hugging Face layout, for (rows, T) unshifted labels and loss_weights: weights finite
    and >= 0; labels == -100 exactly where the weight is 0, except at sample starts (`starts`, bool (rows, T);
    default: position 0), which are never targets whatever their label. One ValueError naming the first row and
    position that break it."""
    bad = ~torch.isfinite(weights) | (weights < 0)
    if bool(bad.any()):
        row, t = (int(x) for x in bad.nonzero()[0])
        raise ValueError(
            f"row {first_row + row}: loss_weights[{t}] is {float(weights[row, t])!r}; weights must be finite and >= 0"
        )
    if starts is None:
        starts = torch.zeros_like(labels, dtype=torch.bool)
        starts[:, 0] = True
    disagree = ((labels == IGNORE_INDEX) != (weights == 0)) & ~starts
    if bool(disagree.any()):
        row, t = (int(x) for x in disagree.nonzero()[0])
        label, weight = int(labels[row, t]), float(weights[row, t])
        raise ValueError(
            f"row {first_row + row}: labels[{t}] is {label} but loss_weights[{t}] is {weight:g}; labels must be -100 "
            "exactly where the weight is 0 (else the loss trains what the weights do not say, or nothing)"
        )


def _positions(feature: dict[str, Any], n: int) -> torch.Tensor:
    """0..len-1 per sample; a packed row (TRL's `seq_lengths`) restarts at every segment."""
    lengths = feature.get("seq_lengths") or [n]
    if sum(lengths) != n or any(k < 1 for k in lengths):
        raise ValueError(f"seq_lengths {list(lengths)} do not split the row of {n} tokens into samples")
    return torch.cat([torch.arange(k) for k in lengths])


def _pad(rows: list[torch.Tensor], length: int, value: Any) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out
