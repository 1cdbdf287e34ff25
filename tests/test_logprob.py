"""`next_token_logprobs`: position t holds log p(token t+1 | tokens <= t), in float32 for any logits dtype."""

import math

import torch

from witune.models.logprob import next_token_logprobs


def test_next_token_logprobs_match_a_per_position_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    ids = torch.randint(0, 7, (2, 5), generator=g)
    out = next_token_logprobs(logits, ids)
    assert out.shape == (2, 4) and out.dtype == torch.float32
    for b in range(2):
        for t in range(4):
            row = logits[b, t]
            want = row[ids[b, t + 1]].item() - math.log(row.exp().sum().item())
            assert abs(out[b, t].item() - want) < 1e-5
    half = next_token_logprobs(logits.bfloat16(), ids)
    assert half.dtype == torch.float32 and torch.allclose(half, out, atol=0.05)
