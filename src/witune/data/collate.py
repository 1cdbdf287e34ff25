"""Batches: right padding, or packing several samples per row with position ids restarting at 0.

Both produce the same tensors: `input_ids`, `labels`, `weights`, `response_mask` and either `attention_mask`
(padding) or `position_ids` (packing). Labels are shifted here, once: `labels[b, t]` is the token that
`logits[b, t]` predicts, -100 where there is none (padding, the last token of a sample, and every sample
boundary inside a packed row, so attention-free "predictions" across samples are never trained).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence, Sized
from typing import TypeVar

import torch

from witune.data.render import Rendered
from witune.loss import IGNORE_INDEX

Item = TypeVar("Item", bound=Sized)


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


# How `pack` groups samples into rows: the config values (`pack: none|greedy|bfd|padding_free`; YAML true means
# bfd). greedy and bfd pack the data set into rows once; padding_free keeps the unpacked schedule and joins
# each micro-batch's samples into one row.
PACKINGS = ("none", "greedy", "bfd", "padding_free")
BIN_PACKINGS = ("greedy", "bfd")
_PACKING_WHAT = "must be none, greedy, bfd or padding_free (true = bfd, false = none)"


def parse_packing(value: object) -> str:
    """A config's `pack` value as one of PACKINGS: true is bfd (the tighter packing), false is none."""
    if value is True:
        return "bfd"
    if value is False:
        return "none"
    if isinstance(value, str) and value in PACKINGS:
        return value
    raise ValueError(_PACKING_WHAT)


def packing_problem(value: object) -> str | None:
    """Why `value` is not a parsed packing (a config built in Python skips the parser), or None."""
    return None if isinstance(value, str) and value in PACKINGS else _PACKING_WHAT


def _check_fits(rows: Sequence[Sized], max_length: int) -> None:
    for r in rows:
        if len(r) > max_length:
            raise ValueError(f"row of {len(r)} tokens does not fit max_length={max_length}; truncate first")


def pack(rows: Sequence[Rendered], max_length: int, strategy: str = "greedy") -> list[list[Rendered]]:
    """Rows grouped into bins of at most max_length tokens (rows longer than that must have been truncated
    before); every row lands in exactly one bin. `strategy`: greedy (in order: a new bin whenever the next row
    does not fit the current one) or bfd (best-fit decreasing, `pack_bfd`)."""
    if strategy == "bfd":
        return pack_bfd(rows, max_length)
    if strategy != "greedy":
        raise ValueError(f"packing strategy {strategy!r}: must be greedy or bfd")
    _check_fits(rows, max_length)
    bins: list[list[Rendered]] = []
    used = max_length + 1
    for r in rows:
        if used + len(r) > max_length:
            bins.append([])
            used = 0
        bins[-1].append(r)
        used += len(r)
    return bins


def pack_bfd(rows: Sequence[Item], max_length: int) -> list[list[Item]]:
    """Best-fit decreasing: rows by length, longest first (ties in data order), each into the fullest bin it
    still fits (ties: the bin opened first), a new bin when none has room. About 11/9 of the optimal number of
    bins at worst (Johnson 1973), where in-order greedy can need 2x. A pure function of the rows (no seed:
    which step a bin trains in is the schedule's seeded permutation). The order of samples inside a step does
    not change the loss (`witune.train.engine`: summed over the step, divided by the step's normaliser), so
    reordering them is free.

    Bins come out in the order they were opened, their samples longest first. Any sized items pack the same
    way (`witune.eval.fast_lm` packs prefix trees into rows with it)."""
    _check_fits(rows, max_length)
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]), i))
    bins: list[list[Item]] = []
    open_space: list[tuple[int, int]] = []  # (room left, bin index), sorted: the fullest fitting bin by bisect
    for i in order:
        n = len(rows[i])
        at = bisect.bisect_left(open_space, (n, -1))
        if at < len(open_space):
            room, b = open_space.pop(at)
        else:
            room, b = max_length, len(bins)
            bins.append([])
        bins[b].append(rows[i])
        if room - n > 0:
            bisect.insort(open_space, (room - n, b))
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
