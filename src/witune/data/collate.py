"""Batches: right padding, or packing several samples per row with position ids restarting at 0.

Both produce the same tensors: `input_ids`, `labels`, `weights`, `response_mask` and either `attention_mask`
(padding) or `position_ids` (packing). Labels are shifted here, once: `labels[b, t]` is the token that
`logits[b, t]` predicts, -100 where there is none (padding, the last token of a sample, and every sample
boundary inside a packed row, so attention-free "predictions" across samples are never trained).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from witune.data.render import Rendered
from witune.loss import IGNORE_INDEX


def _shifted(rows: Sequence[Rendered], pad_token_id: int, length: int) -> dict[str, torch.Tensor]:
    b = len(rows)
    ids = torch.full((b, length), pad_token_id, dtype=torch.long)
    labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long)
    weights = torch.zeros((b, length), dtype=torch.float32)
    response = torch.zeros((b, length), dtype=torch.bool)
    for i, r in enumerate(rows):
        n = len(r)
        ids[i, :n] = torch.tensor(r.input_ids)
        if n > 1:
            labels[i, : n - 1] = ids[i, 1:n]
            weights[i, : n - 1] = torch.tensor(r.weights[1:])
            response[i, : n - 1] = torch.tensor(r.response[1:])
    return {"input_ids": ids, "labels": labels, "weights": weights, "response_mask": response}


def pad_collate(
    rows: Sequence[Rendered], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """Right-pad rows to the longest one; padding gets weight 0 and label -100."""
    length = max(len(r) for r in rows)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    batch = _shifted(rows, pad_token_id, length)
    mask = torch.zeros_like(batch["input_ids"])
    for i, r in enumerate(rows):
        mask[i, : len(r)] = 1
    batch["attention_mask"] = mask
    return batch


def pack(rows: Sequence[Rendered], max_length: int) -> list[list[Rendered]]:
    """Greedy in-order packing of rows into bins of at most max_length tokens (rows longer than that must
    have been truncated before). Order is kept so that a packed epoch sees samples in the same order."""
    bins: list[list[Rendered]] = []
    used = max_length + 1
    for r in rows:
        if len(r) > max_length:
            raise ValueError(f"row of {len(r)} tokens does not fit max_length={max_length}; truncate first")
        if used + len(r) > max_length:
            bins.append([])
            used = 0
        bins[-1].append(r)
        used += len(r)
    return bins


def packed_collate(bins: Sequence[Sequence[Rendered]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """One row per bin: samples concatenated, position_ids restarting at 0 for each sample. No attention_mask:
    transformers derives a block-diagonal causal mask from the position ids, so attention never crosses
    sample boundaries."""
    merged = []
    for group in bins:
        m = Rendered([], [], [], [], group[0].location)
        for r in group:
            m.input_ids += r.input_ids
            m.weights += r.weights  # each sample's weights[0] is 0: its first token is not predicted
            m.roles += r.roles
            m.response += r.response
            m.spans += r.spans if r.spans else [""] * len(r)
        merged.append(m)
    length = max(len(m) for m in merged)
    batch = _shifted(merged, pad_token_id, length)
    pos = torch.zeros_like(batch["input_ids"])
    for i, group in enumerate(bins):
        at = 0
        for r in group:
            pos[i, at : at + len(r)] = torch.arange(len(r))
            if at > 0:  # the token before a sample's start must not be trained to predict it
                batch["labels"][i, at - 1] = IGNORE_INDEX
                batch["weights"][i, at - 1] = 0.0
                batch["response_mask"][i, at - 1] = False
            at += len(r)
        pos[i, at:] = torch.arange(length - at)  # trailing padding: its own "sample", labels already -100
    batch["position_ids"] = pos
    return batch
