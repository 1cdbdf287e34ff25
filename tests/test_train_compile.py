"""torch.compile (CPU inductor) of the model and of the weighted loss gives eager's loss and gradients.

Tolerance: fp32 throughout; inductor fuses and reorders the reductions (sums, softmax, matmul blocking), so the
two agree to rounding, not bitwise: each reordered fp32 sum moves by at most n * 2^-24 of its terms' magnitude,
a few 1e-7 relative at these sizes through a 2-layer model. The test allows 1e-5 relative on the loss and 1e-4
of each parameter's largest gradient entry (we saw 7.6e-8 and 6.4e-7). Slow: compiling takes 5 s with a warm
inductor cache and about 40 s with a cold one on 2 cores.
"""

from __future__ import annotations

import pytest
import torch

from witune.loss import weighted_nll

LOSS_RTOL = 1e-5
GRAD_TOL = 1e-4


def _step(model, loss_fn, ids, labels, weights, response):
    model.zero_grad()
    sums = loss_fn(model(input_ids=ids).logits, labels, weights, response)
    sums.weighted_sum.backward()
    grads = {name.removeprefix("_orig_mod."): p.grad.clone() for name, p in model.named_parameters()}
    return sums, grads


@pytest.mark.slow
def test_compiled_model_and_loss_equal_eager(tiny_model):
    torch.manual_seed(0)
    vocab = tiny_model.config.vocab_size
    ids, labels = torch.randint(0, vocab, (4, 48)), torch.randint(0, vocab, (4, 48))
    labels[:, :5] = -100  # ignored positions
    weights = torch.where(torch.arange(48) < 20, 0.1, 1.0).expand(4, 48).clone()
    response = (torch.arange(48) >= 20).expand(4, 48)
    eager, eager_grads = _step(tiny_model, weighted_nll, ids, labels, weights, response)
    compiled, compiled_grads = _step(
        torch.compile(tiny_model), torch.compile(weighted_nll), ids, labels, weights, response
    )
    for field in ("weighted_sum", "prompt_nll", "response_nll"):
        a, b = getattr(eager, field).item(), getattr(compiled, field).item()
        assert b == pytest.approx(a, rel=LOSS_RTOL), field
    assert eager.nonzero.item() == compiled.nonzero.item()
    assert eager_grads.keys() == compiled_grads.keys()
    for name, g in eager_grads.items():
        assert g.abs().max() > 0, name
        assert (compiled_grads[name] - g).abs().max() <= GRAD_TOL * g.abs().max(), name
