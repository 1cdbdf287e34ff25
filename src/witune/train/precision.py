"""Numeric precision of a run: what `precision` means for the stored weights and for the arithmetic.

* `fp32`: fp32 weights, fp32 arithmetic.
* `bf16`: fp32 *master* weights (the optimizer updates fp32 tensors, so small updates are not rounded away);
  the forward and backward run under accelerate's bf16 autocast (matmuls in bf16 with fp32 accumulation).
* `bf16_weights` (LoRA only): the frozen base weights are *stored* in bf16 (half the memory of `bf16`, no fp32
  copy of the base model anywhere); the trainable LoRA adapters stay fp32 (peft keeps adapter weights in fp32)
  and are the optimizer's master weights; arithmetic under bf16 autocast as with `bf16`. Full fine-tuning with
  bf16 weights is refused: an update smaller than half a bf16 unit in the last place (2^-9 of the weight) would
  be rounded away, so a run at a usual learning rate would silently stop learning.

In every case the loss itself is computed in fp32: `witune.loss` upcasts the logits chunk by chunk and sums
`w * nll` in fp32, and the engine accumulates the logged sums of a step in float64.
"""

from __future__ import annotations

import torch

PRECISIONS = ("fp32", "bf16", "bf16_weights")
BF16_WEIGHTS_NEEDS_LORA = (
    "needs lora_r > 0 for bf16_weights (full fine-tuning needs fp32 master weights: use precision: bf16)"
)


def autocast_dtype(precision: str) -> str:
    """accelerate's `mixed_precision` for a witune `precision`."""
    return "bf16" if precision in ("bf16", "bf16_weights") else "no"


def weight_dtype(precision: str) -> torch.dtype:
    """dtype the model's weights are loaded in (the base weights of a LoRA run)."""
    return torch.bfloat16 if precision == "bf16_weights" else torch.float32
