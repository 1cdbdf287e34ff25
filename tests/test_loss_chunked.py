"""weighted_nll_from_hidden against the reference: materialised logits + F.cross_entropy, value and gradients."""

import pytest
import torch
import torch.nn.functional as F

from witune.loss import IGNORE_INDEX, weighted_nll, weighted_nll_from_hidden

# (rows, hidden, vocab, chunk rows): odd sizes, ragged last chunks, a chunk larger than the data.
SHAPES = [(1, 3, 5, 4), (7, 5, 33, 3), (26, 16, 257, 5), (40, 24, 1000, 64)]
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.bfloat16: dict(rtol=2e-2, atol=2e-3)}


def make(n, h, v, dtype, seed=0, ignore_frac=0.2, bias=False):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g).to(dtype)
    weight = (torch.randn(v, h, generator=g) / h**0.5 * 3).to(dtype)
    b = (torch.randn(v, generator=g) * 0.1).to(dtype) if bias else None
    labels = torch.randint(0, v, (n,), generator=g)
    labels[torch.rand(n, generator=g) < ignore_frac] = IGNORE_INDEX
    response = torch.rand(n, generator=g) < 0.5
    return hidden, weight, b, labels, response


def reference(hidden, weight, bias, labels, w):
    """Everything materialised: logits in the model dtype (as nn.Linear), upcast, per-token CE, weighted sum."""
    logits = F.linear(hidden, weight, bias).float()
    nll = F.cross_entropy(logits, labels, reduction="none", ignore_index=IGNORE_INDEX)
    return (nll * torch.where(labels != IGNORE_INDEX, w, 0.0)).sum()


def value_and_grads(fn, *tensors):
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in tensors]
    out = fn(*leaves)
    out.backward()
    return [out.detach().float()] + [t.grad.float() for t in leaves if t is not None]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
def test_value_and_gradients_match_reference(shape, dtype, bias):
    n, h, v, rows = shape
    hidden, weight, b, labels, response = make(n, h, v, dtype, seed=n, bias=bias)
    w = torch.where(response, 1.0, 0.3)
    w[: n // 3] = 0.0  # zero weights on valid positions: skipped rows
    ours = value_and_grads(
        lambda x, W, B: weighted_nll_from_hidden(x, W, labels, w, lm_head_bias=B, chunk_size=rows).weighted_sum,
        hidden,
        weight,
        b,
    )
    ref = value_and_grads(lambda x, W, B: reference(x, W, B, labels, w), hidden, weight, b)
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r, **TOL[dtype])


def test_batched_shape_and_role_diagnostics_equal_weighted_nll():
    """(B, T, H) input; with all weights non-zero every diagnostic equals the logits-based weighted_nll."""
    hidden, weight, _, labels, response = make(3 * 11, 8, 50, torch.float32, seed=2)
    hidden, labels, response = hidden.view(3, 11, 8), labels.view(3, 11), response.view(3, 11)
    w = torch.where(response, 1.0, 0.1)
    ours = weighted_nll_from_hidden(hidden, weight, labels, w, response, chunk_size=4)
    ref = weighted_nll(hidden @ weight.T, labels, w, response)
    for name in (
        "weighted_sum",
        "nonzero",
        "weight_sum",
        "tokens",
        "prompt_nll",
        "prompt_tokens",
        "response_nll",
        "response_tokens",
        "response_weighted",
    ):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), msg=name)


def test_zero_prompt_weight_skips_prompt_rows_and_diagnostics_flag():
    hidden, weight, _, labels, response = make(30, 8, 40, torch.float32, seed=4)
    w = response.float()  # lambda_p = 0
    ref = weighted_nll(hidden @ weight.T, labels, w, response)
    fast = weighted_nll_from_hidden(hidden, weight, labels, w, response, chunk_size=7)
    assert torch.isnan(fast.prompt_nll)  # prompt rows were never computed
    torch.testing.assert_close(fast.response_nll, ref.response_nll)
    full = weighted_nll_from_hidden(hidden, weight, labels, w, response, chunk_size=7, diagnostics=True)
    torch.testing.assert_close(full.prompt_nll, ref.prompt_nll)
    torch.testing.assert_close(full.weighted_sum, ref.weighted_sum)


def test_zero_prompt_weight_gradient_ignores_prompt_rows():
    """Changing prompt hidden states at lambda_p = 0 changes neither the loss nor any gradient."""
    hidden, weight, _, labels, response = make(20, 6, 30, torch.float32, seed=6)
    w = response.float()
    a = value_and_grads(lambda x, W: weighted_nll_from_hidden(x, W, labels, w).weighted_sum, hidden, weight)
    noisy = torch.where(response[:, None], hidden, torch.randn_like(hidden) * 5)
    b = value_and_grads(lambda x, W: weighted_nll_from_hidden(x, W, labels, w).weighted_sum, noisy, weight)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
    assert a[1][~response].abs().sum() == 0


def test_all_zero_weights_give_attached_zero_and_no_grad_mode():
    hidden, weight, _, labels, _ = make(9, 4, 11, torch.float32)
    x = hidden.clone().requires_grad_(True)
    s = weighted_nll_from_hidden(x, weight, labels, torch.zeros(9))
    assert s.weighted_sum.item() == 0.0 and s.weighted_sum.requires_grad
    s.weighted_sum.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    with torch.no_grad():
        e = weighted_nll_from_hidden(hidden, weight, labels, torch.ones(9))
    torch.testing.assert_close(e.weighted_sum, reference(hidden, weight, None, labels, torch.ones(9)))


def test_grad_output_scaling_and_accumulation():
    """backward scales the precomputed gradients by grad_output (e.g. 1/Z) and accumulates into .grad."""
    hidden, weight, _, labels, response = make(15, 6, 21, torch.float32, seed=8)
    w = torch.where(response, 1.0, 0.5)
    x1, x2 = (hidden.clone().requires_grad_(True) for _ in range(2))
    (weighted_nll_from_hidden(x1, weight, labels, w).weighted_sum / 7.0).backward()
    (reference(x2, weight, None, labels, w) / 7.0).backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=2e-5, atol=2e-6)


def test_bad_input_is_clear():
    hidden, weight, _, labels, _ = make(5, 4, 9, torch.float32)
    with pytest.raises(ValueError, match="shape mismatch"):
        weighted_nll_from_hidden(hidden, weight, labels[:4], torch.ones(4))
    with pytest.raises(ValueError, match="lm_head_weight must be"):
        weighted_nll_from_hidden(hidden, weight.T, labels, torch.ones(5))
    with pytest.raises(ValueError, match="unknown backend"):
        weighted_nll_from_hidden(hidden, weight, labels, torch.ones(5), backend="triton")


def test_logits_path_negative_grad_output():
    """weighted_nll folds the weight into the softmax exponent; a negative grad_output must take the plain path."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(9, 17, generator=g).requires_grad_(True)
    labels = torch.randint(0, 17, (9,), generator=g)
    w = torch.rand(9, generator=g)
    w[2] = 0.0
    (-weighted_nll(logits, labels, w).weighted_sum).backward()
    ref = logits.detach().clone().requires_grad_(True)
    (-(F.cross_entropy(ref, labels, reduction="none") * w).sum()).backward()
    torch.testing.assert_close(logits.grad, ref.grad)


@pytest.mark.parametrize("layout", ["all", "prefix_skipped", "scattered"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
def test_contiguous_and_gathered_active_rows_match_reference(layout, dtype, bias):
    """Active rows in one run are sliced (dL/dh written in place), otherwise gathered: both equal the reference."""
    n, h, v = 37, 12, 301
    hidden, weight, b, labels, response = make(n, h, v, dtype, seed=11, ignore_frac=0.0, bias=bias)
    w = torch.where(response, 1.0, 0.25)
    if layout == "prefix_skipped":
        w[: n // 3] = 0.0  # lambda_p = 0 on a leading prompt: one contiguous run of active rows
    elif layout == "scattered":
        w[::4] = 0.0
    ours = value_and_grads(
        lambda x, W, B: weighted_nll_from_hidden(x, W, labels, w, lm_head_bias=B, chunk_size=5).weighted_sum,
        hidden,
        weight,
        b,
    )
    ref = value_and_grads(lambda x, W, B: reference(x, W, B, labels, w), hidden, weight, b)
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r, **TOL[dtype])


def test_skipping_zero_weight_rows_changes_no_value_or_gradient():
    """Skipping rows of weight 0 gives the same loss and gradients as computing them (diagnostics=True)."""
    hidden, weight, _, labels, response = make(40, 10, 97, torch.float32, seed=12, ignore_frac=0.1)
    w = torch.where(response, 1.0, 0.0)

    def fn(diag):
        return lambda x, W: weighted_nll_from_hidden(x, W, labels, w, chunk_size=6, diagnostics=diag).weighted_sum

    skipped, computed = value_and_grads(fn(False), hidden, weight), value_and_grads(fn(True), hidden, weight)
    for a, c in zip(skipped, computed):
        torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-7)
    assert skipped[1][w == 0].abs().max() == 0  # dL/dh of a skipped row is exactly zero
