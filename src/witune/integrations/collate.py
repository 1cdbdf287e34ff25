"""A collator for `weighted_dataset` rows: right padding, or padding-free packing, with the weights aligned.

Why not `witune.data.collate`: that one shifts labels once for witune's own loop; here labels stay unshifted
(Hugging Face convention) because the model, TRL's fused head and the Trainer's `num_items_in_batch` all
shift them themselves. The rules are the same: padding and sample starts get label -100 and weight 0.

Padding-free (`padding_free=True`, like transformers' `DataCollatorWithFlattening`): the batch becomes one row,
samples concatenated, `position_ids` restarting at 0 for each sample (and for each packed segment of rows that
TRL's packing made, from their `seq_lengths`), no attention mask: transformers then attends within samples only.
The first token of every sample is never a target, so no loss crosses a sample boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from witune.loss import IGNORE_INDEX


@dataclass
class WeightedCollator:
    pad_token_id: int
    padding_free: bool = False
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [torch.as_tensor(f["input_ids"], dtype=torch.long) for f in features]
        labels = [torch.as_tensor(f.get("labels", f["input_ids"]), dtype=torch.long) for f in features]
        weights = [torch.as_tensor(f["loss_weights"], dtype=torch.float32) for f in features]
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
            out["attention_mask"] = _pad([torch.ones_like(i) for i in ids], length, 0)
            if any("seq_lengths" in f for f in features):
                out["position_ids"] = _pad(pos, length, 0)  # packed rows: attention still crosses segments
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


def _positions(feature: dict[str, Any], n: int) -> torch.Tensor:
    """0..len-1 per sample; a packed row (TRL's `seq_lengths`) restarts at every segment."""
    lengths = feature.get("seq_lengths") or [n]
    return torch.cat([torch.arange(k) for k in lengths])


def _pad(rows: list[torch.Tensor], length: int, value: Any) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out
