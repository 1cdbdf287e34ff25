"""The `loss_backend` switch: every backend that can run here gives the torch backend's value and gradients.

Liger-Kernel and cut-cross-entropy are CUDA (Triton) kernels: their cases skip, with the reason, where the
package or a GPU is missing. `auto` must pick torch on CPU, so it is compared bit for bit there.
"""

import importlib.util

import pytest
import torch

from witune.data.errors import ConfigError
from witune.loss import IGNORE_INDEX, weighted_nll_from_hidden
from witune.loss.chunked import BACKENDS
from witune.train.config import TrainConfig

PACKAGES = {"liger": "liger_kernel", "cce": "cut_cross_entropy"}


def _device_for(backend: str) -> str:
    """The device a backend runs on here, or skip with the reason it cannot."""
    if backend in PACKAGES:
        if importlib.util.find_spec(PACKAGES[backend]) is None:
            pytest.skip(f"backend {backend!r} needs the package {PACKAGES[backend]!r}, not installed")
        if not torch.cuda.is_available():
            pytest.skip(f"backend {backend!r} is a CUDA kernel and no CUDA device is available")
        return "cuda"
    return "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n, h, v = 48, 32, 301
    hidden = torch.randn(n, h, generator=g)
    weight = torch.randn(v, h, generator=g) / h**0.5 * 2
    labels = torch.randint(0, v, (n,), generator=g)
    labels[torch.rand(n, generator=g) < 0.15] = IGNORE_INDEX
    response = torch.arange(n) >= n // 3
    w = torch.where(response, 1.0, 0.1)  # two distinct weights: two groups for the fused kernels
    return [t.to(device) for t in (hidden, weight, labels, w, response)]


def _run(backend: str, hidden, weight, labels, w, response):
    x, W = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    sums = weighted_nll_from_hidden(x, W, labels, w, response, backend=backend, chunk_size=7)
    sums.weighted_sum.backward()
    return sums, x.grad, W.grad


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
def test_backend_matches_torch_on_the_same_inputs(backend):
    device = _device_for(backend)
    inputs = _inputs(device)
    ours, gx, gw = _run(backend, *inputs)
    ref, rx, rw = _run("torch", *inputs)
    # fused kernels sum in another order (and in Triton): fp32 tolerances, not bit equality
    tol = {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(ours.weighted_sum, ref.weighted_sum, **tol)
    torch.testing.assert_close(gx, rx, **tol)
    torch.testing.assert_close(gw, rw, **tol)
    for name in ("nonzero", "weight_sum", "tokens"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name))
    if backend == "auto" and device == "cpu":  # auto is the torch path on CPU: identical, not just close
        assert torch.equal(ours.weighted_sum, ref.weighted_sum) and torch.equal(gx, rx) and torch.equal(gw, rw)


def test_unavailable_backend_is_a_clear_error():
    missing = [b for b, pkg in PACKAGES.items() if importlib.util.find_spec(pkg) is None]
    if not missing:
        pytest.skip("both fused packages are installed")
    hidden, weight, labels, w, _ = _inputs("cpu")
    with pytest.raises(ImportError, match=f"backend '{missing[0]}' needs the package"):
        weighted_nll_from_hidden(hidden, weight, labels, w, backend=missing[0])


def test_config_switch_is_validated():
    assert TrainConfig(data="x").loss_backend == "auto"
    for b in BACKENDS:
        TrainConfig(data="x", loss_backend=b).validate()
    with pytest.raises(ConfigError, match="loss_backend"):
        TrainConfig(data="x", loss_backend="triton").validate()


def _stand_in_kernel(calls):
    """A fused kernel for CPU tensors: the same sum by F.cross_entropy, counting its calls."""

    def fused_sum(kind, h, weight, bias, target):
        calls.append(kind)
        logits = h @ weight.T if bias is None else h @ weight.T + bias
        return torch.nn.functional.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")

    return fused_sum


def test_auto_falls_back_to_torch_when_a_batch_has_too_many_weights(monkeypatch, recwarn):
    """auto takes the torch path (same value) for a batch over the fused kernels' weight limit, saying so once;
    a backend named explicitly keeps refusing that batch."""
    import witune.loss.chunked as chunked

    calls: list[str] = []
    monkeypatch.setattr(chunked, "_fused_backend", lambda backend, h: None if backend == "torch" else "liger")
    monkeypatch.setattr(chunked, "_fused_sum", _stand_in_kernel(calls))
    monkeypatch.setattr(chunked, "_warned_fallback", False, raising=False)
    hidden, weight, labels, w, response = _inputs("cpu")

    # Two weights: the stand-in kernel runs (the fused path is the one taken) and gives the torch value.
    two = weighted_nll_from_hidden(hidden, weight, labels, w, response, backend="auto").weighted_sum
    assert calls == ["liger", "liger"]
    torch.testing.assert_close(two, weighted_nll_from_hidden(hidden, weight, labels, w, backend="torch").weighted_sum)

    many = torch.linspace(0.1, 1.0, hidden.shape[0])  # ~40 distinct weights on valid rows: over 8
    expected = weighted_nll_from_hidden(hidden, weight, labels, many, backend="torch").weighted_sum
    calls.clear()
    for _ in range(2):
        got = weighted_nll_from_hidden(hidden, weight, labels, many, backend="auto").weighted_sum
        assert torch.equal(got, expected)
    assert calls == []
    said = [str(r.message) for r in recwarn if "distinct token weights" in str(r.message)]
    assert len(said) == 1 and "torch path" in said[0]

    with pytest.raises(ValueError, match="distinct token weights: too many for the fused .liger."):
        weighted_nll_from_hidden(hidden, weight, labels, many, backend="liger")
    assert calls == []
