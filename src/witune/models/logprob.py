"""Next-token log-probabilities of a sequence under a causal LM's logits: the one place they are computed
outside the training loss (prompt log-probability in `witune.stats.prompts`; the judge's verdict scores)."""

from __future__ import annotations

import torch


def next_token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """``out[b, t] = log p(input_ids[b, t + 1] | input_ids[b, :t + 1])`` from ``logits`` of shape [B, T, V].

    The result has T - 1 columns (the first token has no prediction). Computed in float32 whatever the logits'
    dtype: a bf16 log-softmax loses about two decimal digits, enough to change which verdict a judge prefers.
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
