"""The weighted loss against F.cross_entropy and a naive reference, forward and backward."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import witune.loss.weighted as weighted_mod
from witune.loss import IGNORE_INDEX, LossSums, normalizer_counts, weighted_loss, weighted_nll

SHAPES = [(1, 1, 5), (3, 7, 33), (2, 13, 257), (4, 5, 1000)]
# bf16 logits are upcast chunk by chunk; the reference upcasts the whole tensor. Both sum in fp32, so the
# only difference is summation order: tolerances are those of fp32, relative to bf16-valued inputs.
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=1e-4, atol=1e-5)}


def make(shape, dtype, seed=0, ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    b, t, v = shape
    logits = (torch.randn(b, t, v, generator=g) * 3).to(dtype)
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[torch.rand(b, t, generator=g) < ignore_frac] = IGNORE_INDEX
    response = torch.rand(b, t, generator=g) < 0.5
    return logits, labels, response


def reference(logits, labels, weights, normalization):
    """Naive: full fp32 upcast, per-token CE, weighted sum, normaliser from the definition."""
    nll = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none", ignore_index=IGNORE_INDEX)
    valid = labels.flatten() != IGNORE_INDEX
    w = weights.flatten().float() * valid
    z = {"nonzero": (w != 0).sum(), "weight_sum": w.sum(), "tokens": valid.sum()}[normalization]
    return (nll * w).sum() / z


def grads(fn, logits):
    x = logits.detach().clone().requires_grad_(True)
    out = fn(x)
    out.backward()
    return out.detach(), x.grad.float()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_response_only_equals_masked_cross_entropy(shape, dtype):
    logits, labels, response = make(shape, dtype)
    if not (response & (labels != IGNORE_INDEX)).any():
        response[..., 0], labels[..., 0] = True, 0
    masked = torch.where(response, labels, IGNORE_INDEX)
    ours, g_ours = grads(lambda x: weighted_loss(x, labels, response.float()), logits)
    ref, g_ref = grads(lambda x: F.cross_entropy(x.float().flatten(0, 1), masked.flatten()), logits)
    torch.testing.assert_close(ours.float(), ref, **TOL[dtype])
    torch.testing.assert_close(g_ours, g_ref, **TOL[dtype])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_all_ones_equals_full_cross_entropy(shape, dtype):
    logits, labels, _ = make(shape, dtype, ignore_frac=0.0)
    ours, g_ours = grads(lambda x: weighted_loss(x, labels, torch.ones_like(labels, dtype=torch.float)), logits)
    ref, g_ref = grads(lambda x: F.cross_entropy(x.float().flatten(0, 1), labels.flatten()), logits)
    torch.testing.assert_close(ours.float(), ref, **TOL[dtype])
    torch.testing.assert_close(g_ours, g_ref, **TOL[dtype])


@pytest.mark.parametrize("normalization", ["nonzero", "weight_sum", "tokens"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weighted_matches_naive_reference(normalization, dtype):
    logits, labels, response = make((3, 11, 97), dtype, seed=3)
    weights = torch.where(response, 1.0, 0.3)
    weights[0, :4] = 0.0  # some zero weights that are not ignored positions
    ours, g_ours = grads(lambda x: weighted_loss(x, labels, weights, normalization), logits)
    ref, g_ref = grads(lambda x: reference(x, labels, weights, normalization), logits)
    torch.testing.assert_close(ours.float(), ref, **TOL[dtype])
    torch.testing.assert_close(g_ours, g_ref, **TOL[dtype])


def test_chunking_is_invisible(monkeypatch):
    logits, labels, response = make((2, 9, 50), torch.float32, seed=5)
    weights = torch.where(response, 1.0, 0.25)
    whole = grads(lambda x: weighted_loss(x, labels, weights), logits)
    monkeypatch.setattr(weighted_mod, "_CHUNK_ELEMENTS", 120)  # 2 rows per chunk, a ragged last chunk
    chunked = grads(lambda x: weighted_loss(x, labels, weights), logits)
    torch.testing.assert_close(whole[0], chunked[0])
    torch.testing.assert_close(whole[1], chunked[1])


def test_role_diagnostics_and_counts():
    logits, labels, response = make((2, 8, 20), torch.float32, seed=1)
    weights = torch.where(response, 0.8, 0.1)
    s = weighted_nll(logits, labels, weights, response_mask=response)
    nll = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none", ignore_index=IGNORE_INDEX)
    valid = labels.flatten() != IGNORE_INDEX
    resp = response.flatten() & valid
    torch.testing.assert_close(s.response_nll, nll[resp].sum())
    torch.testing.assert_close(s.prompt_nll, nll[valid & ~resp].sum())
    assert s.response_tokens + s.prompt_tokens == s.tokens == valid.sum()
    counts = normalizer_counts(labels, weights)
    assert counts.tolist() == pytest.approx([s.nonzero.item(), s.weight_sum.item(), s.tokens.item()])


def test_zero_trainable_positions_give_attached_zero():
    logits, labels, _ = make((2, 5, 11), torch.float32)
    x = logits.clone().requires_grad_(True)
    loss = weighted_loss(x, labels, torch.zeros(2, 5))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_sums_add_up_across_microbatches():
    logits, labels, response = make((4, 6, 30), torch.float32, seed=9)
    weights = torch.where(response, 1.0, 0.5)
    whole = weighted_nll(logits, labels, weights, response)
    parts = weighted_nll(logits[:1], labels[:1], weights[:1], response[:1])
    parts = parts + weighted_nll(logits[1:], labels[1:], weights[1:], response[1:])
    for name in ("weighted_sum", "nonzero", "weight_sum", "tokens", "prompt_nll", "response_nll", "response_weighted"):
        torch.testing.assert_close(getattr(parts, name), getattr(whole, name))


def test_normalizer_choices():
    s = LossSums(*(torch.tensor(float(i + 1)) for i in range(9)))
    assert s.normalizer("nonzero").item() == 2 and s.normalizer("tokens").item() == 4
    assert s.normalizer(10).item() == 10
    with pytest.raises(ValueError, match="unknown normalization"):
        s.normalizer("mean")
    with pytest.raises(ValueError, match="positive"):
        s.normalizer(0)


def test_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match="shape mismatch"):
        weighted_nll(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4))


def test_loss_imports_without_transformers():
    code = "import sys, witune.loss; assert 'transformers' not in sys.modules, 'loss imported transformers'"
    subprocess.run([sys.executable, "-c", code], check=True)
