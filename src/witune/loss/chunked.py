"""The weighted loss straight from hidden states and the output projection, without the (tokens x vocab) logits.

    weighted_sum = sum_t w_t * (logsumexp(h_t W^T + b) - (h_t W^T + b)[y_t])

With a 128k vocabulary, 8k tokens of fp32 logits are 4.2 GB, and autograd keeps them plus their gradient:
the loss, not the model, is then the memory peak. Here the rows are processed in chunks of about
`_CHUNK_ELEMENTS` logits. The gradients are computed in the *forward* pass, chunk by chunk, while the chunk's
logits are still in hand (the Liger-Kernel trick): the softmax of a chunk is turned into dL/dh for those rows
and accumulated into dL/dW, then dropped. Backward only scales those by the incoming gradient.

Why compute the gradients in forward rather than recompute the logits in backward: it costs three matmuls
per chunk (logits, dL/dh, dL/dW) instead of four, and the only thing kept between forward and backward is
dL/dh (the size of the hidden states) and dL/dW (the size of W), which the optimizer needs anyway. The price
is that a forward under autograd always pays for the gradient, so evaluation must run it under
`torch.no_grad()` (then no gradient is computed at all).

Rows with weight 0 (ignored positions, and every prompt token when lambda_p = 0) are skipped entirely: no
matmul, no softmax. Their nll is therefore unknown, so the diagnostics `prompt_nll` / `response_nll` are NaN
when such rows exist among valid positions, unless `diagnostics=True`, which also computes (without gradient)
the nll of valid zero-weight rows.

On GPU, where Liger-Kernel or cut-cross-entropy is installed, `backend="auto"` uses their fused kernels:
once per distinct non-zero weight value with `reduction="sum"`, combined as sum_k w_k * S_k (per-token
`reduction="none"` gradients of those kernels are not relied on). A batch with more than `_MAX_FUSED_GROUPS`
distinct weights goes down the torch path under "auto" (`fused_fits`); a named fused backend refuses it. The
kernels themselves are not exercised on CPU.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from witune.loss.dynamic import DynamicWeight, row_factor
from witune.loss.weighted import _CHUNK_ELEMENTS, IGNORE_INDEX, LossSums

# Logits per chunk: `_CHUNK_ELEMENTS` (owned by loss.weighted: one budget for both paths) = 2^25 fp32
# elements = 128 MiB (261 rows at a 128,256 vocabulary). A (V x H) head does not fit in cache at any chunk size, so each chunk streams W through three matmuls; thin chunks make those
# matmuls inefficient (2 cores, 128k x 576 head: 131-row chunks ran the three matmuls at ~25 GFLOP/s, 256-512
# rows at ~35-38, the whole 2,048 rows at ~26; measured under load, ratios only). 261 rows keeps the chunk's
# memory (128 MiB, reused for every chunk) well under the fp32 dL/dW (282 MiB) that the optimizer needs anyway.
BACKENDS = ("auto", "torch", "liger", "cce")
_MAX_FUSED_GROUPS = 8  # beyond this many distinct weight values the per-weight fused calls stop paying off


def weighted_nll_from_hidden(
    hidden: Tensor,
    lm_head_weight: Tensor,
    labels: Tensor,
    weights: Tensor,
    response_mask: Tensor | None = None,
    *,
    lm_head_bias: Tensor | None = None,
    chunk_size: int | None = None,
    diagnostics: bool = False,
    backend: str = "auto",
    ignore_index: int = IGNORE_INDEX,
    dynamic: DynamicWeight | None = None,
    side: Tensor | None = None,
) -> LossSums:
    """Weighted NLL sums of `hidden @ lm_head_weight.T (+ bias)` against labels, never materialising the logits.

    hidden: (N, H) or (B, T, H); lm_head_weight: (V, H); labels, weights, response_mask: (N,) or (B, T),
    aligned with hidden (no shifting here, as `weighted_nll`). Same `LossSums` contract as `weighted_nll`;
    `weighted_sum` carries the graph to `hidden`, `lm_head_weight` and `lm_head_bias`. `chunk_size` is rows
    per chunk (default: about 2^24 logits per chunk). See the module docstring for `diagnostics`/`backend`.
    `dynamic` / `side`: a dynamic token weight and its per-token input, as in `weighted_nll`; computed chunk by
    chunk from the logits in hand (the torch path only: the fused kernels give no per-token probabilities).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    h = hidden.reshape(-1, hidden.shape[-1])
    if labels.shape != hidden.shape[:-1] or weights.shape != labels.shape:
        raise ValueError(
            f"shape mismatch: hidden {tuple(hidden.shape)}, labels {tuple(labels.shape)}, "
            f"weights {tuple(weights.shape)}"
        )
    if lm_head_weight.dim() != 2 or lm_head_weight.shape[1] != h.shape[1]:
        raise ValueError(f"lm_head_weight must be (vocab, {h.shape[1]}), got {tuple(lm_head_weight.shape)}")
    labels = labels.reshape(-1)
    valid = labels != ignore_index
    w = torch.where(valid, weights.reshape(-1).to(torch.float32), 0.0)

    if dynamic is not None and backend in ("liger", "cce"):
        raise ValueError(
            f"dynamic weight {dynamic.name!r} needs per-token probabilities, which the fused {backend!r} kernel "
            "does not give; use loss_backend 'torch' or 'auto'"
        )
    fused = None if dynamic is not None else _fused_backend(backend, h)
    values = torch.unique(w[w != 0]) if fused is not None else None
    if values is not None and not fused_fits(backend, values.numel()):
        fused = None
    parts = None
    if fused is not None:
        assert values is not None  # computed above whenever a fused kernel was picked
        weighted_sum, nll = _fused_weighted_sum(
            fused, h, lm_head_weight, lm_head_bias, labels, w, values, valid, diagnostics
        )
    else:
        rows = chunk_size or max(1, _CHUNK_ELEMENTS // lm_head_weight.shape[0])
        # Rows of weight 0 are skipped; with diagnostics they are computed too (their gradient is scaled by 0).
        need_h = torch.is_grad_enabled() and h.requires_grad
        need_w = torch.is_grad_enabled() and lm_head_weight.requires_grad
        need_b = torch.is_grad_enabled() and lm_head_bias is not None and lm_head_bias.requires_grad
        active = (w != 0) | (valid & diagnostics)
        flat_side = None if side is None else side.reshape(-1).to(torch.float32)
        weighted_sum, nll, parts = _HiddenWeightedCE.apply(
            h,
            lm_head_weight,
            lm_head_bias,
            labels.clamp_min(0),
            w,
            active,
            rows,
            (need_h, need_w, need_b),
            dynamic,
            flat_side,
        )
    return LossSums.from_rows(weighted_sum, nll, w, valid, response_mask, parts)


class _HiddenWeightedCE(torch.autograd.Function):
    """(weighted sum, per-row nll, per-row contribution) over the active rows of hidden @ W.T (+ b); gradients
    made in forward. A dynamic rule's factor is taken per chunk and multiplies the row weights before the gradient.

    Per-row nll is NaN for inactive rows (never computed); it and the contributions are detached diagnostics.
    """

    @staticmethod
    def forward(
        ctx,
        h: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        labels: Tensor,
        w: Tensor,
        active: Tensor,
        rows: int,
        needs: tuple[bool, bool, bool],
        rule: DynamicWeight | None = None,
        side: Tensor | None = None,
    ):
        need_h, need_w, need_b = needs
        n = h.shape[0]
        idx = active.nonzero().squeeze(1)
        # Active rows that are one contiguous run (the usual case: all rows, or a response after a skipped
        # prompt) are sliced, not gathered: no copy of the hidden chunk and dL/dh written in place.
        contiguous = idx.numel() > 0 and int(idx[-1] - idx[0]) + 1 == idx.numel()
        first = int(idx[0]) if contiguous else 0
        nll = torch.full((n,), float("nan"), dtype=torch.float32, device=h.device)
        parts = torch.zeros((n,), dtype=torch.float32, device=h.device)
        grad_h = torch.zeros_like(h) if need_h else None
        # dL/dW is summed over chunks in fp32 whatever W's dtype, so bf16 rounding does not pile up over chunks.
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=h.device) if need_b else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        # One logits buffer for all chunks: a fresh 64+ MiB tensor per chunk costs page faults on every chunk.
        buf = torch.empty((min(rows, idx.numel()), weight.shape[0]), dtype=h.dtype, device=h.device)
        for s in range(0, idx.numel(), rows):
            sel: slice | Tensor = (
                slice(first + s, first + min(s + rows, idx.numel())) if contiguous else idx[s : s + rows]
            )
            hc, yc, wc = h[sel], labels[sel], w[sel]
            r = hc.shape[0]
            # In the model's dtype, exactly as its own nn.Linear lm_head would; upcast next.
            logits = buf[:r]
            if bias is None:
                torch.mm(hc, weight.T, out=logits)
            else:
                torch.addmm(bias, hc, weight.T, out=logits)
            x = logits if logits.dtype == torch.float32 else logits.float()
            # log-sum-exp by hand, keeping exp(x - max) in place: it is the unnormalised softmax the gradient
            # needs, so the chunk is exponentiated once (torch.logsumexp would allocate and exponentiate a copy).
            target = x.gather(1, yc[:, None]).squeeze(1)
            m = x.amax(dim=1)
            x.sub_(m[:, None]).exp_()
            total_exp = x.sum(dim=1)
            row_nll = m + total_exp.log() - target
            nll[sel] = row_nll
            if rule is not None:
                # x holds exp(logits - m) = total_exp * p, so the entropy is log(total_exp) - sum(x log x) / total_exp
                entropy = (
                    total_exp.log() - torch.special.xlogy(x, x).sum(dim=1) / total_exp if rule.needs_entropy else None
                )
                wc = wc * row_factor(rule, row_nll, entropy, None if side is None else side[sel])
            row_parts = row_nll * wc
            parts[sel] = row_parts
            total += row_parts.sum()
            if not (need_h or need_w or need_b):
                continue
            # d/dx [lse(x) - x_y] = softmax(x) - onehot(y), scaled by the row weight; in place on x.
            x.mul_((wc / total_exp)[:, None])
            x.scatter_add_(1, yc[:, None], -wc[:, None])
            if need_b:
                assert grad_b is not None  # allocated above exactly when need_b
                grad_b += x.sum(0)
            g = x.to(h.dtype)
            del x
            if need_h:
                assert grad_h is not None  # allocated above exactly when need_h
                if contiguous:
                    torch.mm(g, weight, out=grad_h[sel])
                else:
                    grad_h[sel] = g @ weight
            if need_w:
                assert grad_w is not None  # allocated above exactly when need_w
                if hc.dtype == torch.float32:
                    grad_w.addmm_(g.T, hc)  # in place: no (V, H) temporary
                else:
                    grad_w += (g.T @ hc).float()
        ctx.save_for_backward(*(t if t is not None else torch.empty(0) for t in (grad_h, grad_w, grad_b)))
        ctx.has = (grad_h is not None, grad_w is not None, grad_b is not None)
        ctx.dtypes = (h.dtype, weight.dtype, bias.dtype if bias is not None else None)
        ctx.mark_non_differentiable(nll, parts)
        return total, nll, parts

    @staticmethod
    def backward(ctx, grad_sum: Tensor, _grad_nll: Tensor | None, _grad_parts: Tensor | None):
        saved = ctx.saved_tensors
        out: list[Tensor | None] = []
        for t, has, dtype in zip(saved, ctx.has, ctx.dtypes):
            if not has:
                out.append(None)
                continue
            # grad_sum is 1 for a plain loss.backward(); skip the full-size multiply then.
            g = t if bool(grad_sum == 1) else t * grad_sum.to(t.dtype)
            out.append(g.to(dtype))
        return out[0], out[1], out[2], None, None, None, None, None, None, None


# ---- optional fused GPU kernels (not exercised on CPU) --------------------------------------------------------


_PACKAGES = {"liger": "liger_kernel", "cce": "cut_cross_entropy"}


def missing_backend(backend: str) -> str | None:
    """Why a fused `backend` cannot run here (its package is not installed), or None. Configs check this before
    training (`TrainConfig.problems`), so the run fails in one line before any work, not at its first step."""
    import importlib.util

    module = _PACKAGES.get(backend)
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return f"needs the package {module!r} (pip install {module.replace('_', '-')})"


def _fused_backend(backend: str, h: Tensor) -> str | None:
    """The fused kernel to use, or None for the torch path. "auto" picks one only on CUDA when installed."""
    if backend == "torch" or (backend == "auto" and not h.is_cuda):
        return None
    for name, module in _PACKAGES.items():
        if backend in ("auto", name):
            try:
                __import__(module)
                return name
            except ImportError:
                if backend == name:
                    why = missing_backend(name) or f"cannot import {module!r}"
                    raise ImportError(f"backend {name!r} {why}") from None
    return None


_warned_fallback = False  # "auto" says once per process that it fell back, not at every batch


def fused_fits(backend: str, groups: int) -> bool:
    """Whether a batch with `groups` distinct non-zero weights goes down the fused path.

    Message, sample and span weights routinely give more than `_MAX_FUSED_GROUPS` values, one kernel call
    each: "auto" then takes the torch path for that call (warning once); a backend named explicitly refuses.
    """
    global _warned_fallback
    if groups <= _MAX_FUSED_GROUPS:
        return True
    if backend != "auto":
        raise ValueError(
            f"{groups} distinct token weights: too many for the fused {backend!r} path (at most "
            f"{_MAX_FUSED_GROUPS}); use loss_backend 'torch' or 'auto'"
        )
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(
            f"loss_backend auto: a batch has {groups} distinct token weights (the fused kernels take at most "
            f"{_MAX_FUSED_GROUPS}); such batches use the torch path",
            stacklevel=3,
        )
    return False


def _fused_sum(kind: str, h: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor) -> Tensor:
    """sum over rows of CE(h W^T + b, target), ignoring target == -100, by a fused kernel."""
    if kind == "liger":
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

        return LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")(weight, h, target, bias)
    from cut_cross_entropy import linear_cross_entropy

    if bias is not None:
        raise ValueError("cut-cross-entropy takes no lm_head bias; use backend='torch' or 'liger'")
    return linear_cross_entropy(h, weight, target, ignore_index=IGNORE_INDEX, reduction="sum")


def _fused_weighted_sum(
    kind: str,
    h: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    w: Tensor,
    values: Tensor,
    valid: Tensor,
    diagnostics: bool,
) -> tuple[Tensor, Tensor]:
    """lambda_1 S_1 + lambda_2 S_2 + ...: one reduction="sum" kernel call per distinct non-zero weight (`values`).

    Rows of weight 0 are never passed (lambda_p = 0 skips the prompt pass). Per-row nll is not available from
    these kernels: the returned nll holds each group's mean nll on its rows, so per-role diagnostics are exact
    when roles have distinct weights and group averages otherwise.
    """
    total = h.new_zeros((), dtype=torch.float32)
    nll = torch.full_like(w, float("nan"))
    groups = [(v, w == v) for v in values]
    if diagnostics:
        groups.append((None, valid & (w == 0)))
    for value, rows in groups:
        if not bool(rows.any()):
            continue
        target = torch.where(rows, labels, IGNORE_INDEX)
        if value is None:
            with torch.no_grad():
                s = _fused_sum(kind, h, weight, bias, target).float()
        else:
            s = _fused_sum(kind, h, weight, bias, target).float()
            total = total + value * s
        nll[rows] = s.detach() / rows.sum()
    return total, nll
