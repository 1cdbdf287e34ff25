"""The weighted token-level negative log-likelihood (WIT / prompt-loss-weight loss).

    L = sum_t w_t * nll_t / Z

The sum and the normaliser Z are returned *separately*: a trainer must count Z over the whole optimizer step
(every gradient-accumulation micro-batch, every data-parallel rank) before calling backward, otherwise
micro-batches with few tokens get too much say (the classic gradient-accumulation bug). `weighted_nll` gives
the numerator of one micro-batch; `normalizer_counts` counts the candidates for Z from labels and weights
alone, which needs no forward pass, so a trainer can sum them over the step first.

The cross-entropy is computed by a small autograd function that walks the logits in row chunks, upcasting
one chunk at a time to fp32: it never materialises an fp32 copy of the whole (tokens x vocab) logits, and it
saves only the per-row log-sum-exp for backward, recomputing the softmax chunk by chunk there.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from witune.loss.dynamic import DynamicWeight, row_factor

IGNORE_INDEX = -100
NORMALIZATIONS = ("nonzero", "weight_sum", "tokens")  # also the order of normalizer_counts
# Rows per chunk are chosen so that one fp32 chunk holds about this many elements (128 MiB).
_CHUNK_ELEMENTS = 1 << 25


@dataclass
class LossSums:
    """Sums over the positions of one (micro-)batch. Only `weighted_sum` carries a graph.

    Counts are float tensors so that they can be summed across micro-batches and all-reduced together.
    """

    weighted_sum: Tensor  # sum_t w_t * nll_t
    nonzero: Tensor  # positions with w_t != 0 (the WIT normaliser)
    weight_sum: Tensor  # sum_t w_t
    tokens: Tensor  # supervised positions (label != ignore_index), whatever their weight
    prompt_nll: Tensor  # unweighted nll summed over prompt positions (diagnostic)
    prompt_tokens: Tensor
    response_nll: Tensor  # unweighted nll summed over response positions (diagnostic)
    response_tokens: Tensor
    response_weighted: Tensor  # the part of weighted_sum from response positions (diagnostic: response share)

    @classmethod
    def from_rows(
        cls,
        weighted_sum: Tensor,
        nll: Tensor,
        w: Tensor,
        valid: Tensor,
        response_mask: Tensor | None,
        contributions: Tensor | None = None,
    ) -> LossSums:
        """Sums from per-row nll (NaN where a row was skipped), weights w (0 at ignored rows) and masks.
        `contributions`: each row's part of weighted_sum when it is not w * nll (dynamic weights, smoothing)."""
        resp = valid if response_mask is None else valid & response_mask.reshape(-1)
        prompt = valid & ~resp
        f32 = torch.float32
        parts = torch.nan_to_num(nll) * w if contributions is None else torch.nan_to_num(contributions)
        return cls(
            weighted_sum=weighted_sum,
            nonzero=(w != 0).sum().to(f32),
            weight_sum=w.sum(),
            tokens=valid.sum().to(f32),
            prompt_nll=nll[prompt].sum(),
            prompt_tokens=prompt.sum().to(f32),
            response_nll=nll[resp].sum(),
            response_tokens=resp.sum().to(f32),
            response_weighted=parts[resp].sum(),
        )

    def detached(self) -> LossSums:
        return LossSums(*(getattr(self, f.name).detach() for f in fields(self)))

    def __add__(self, other: LossSums) -> LossSums:
        return LossSums(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def normalizer(self, normalization: str | float = "nonzero") -> Tensor:
        """Z for these sums: a name from NORMALIZATIONS or an externally supplied positive number."""
        if isinstance(normalization, str):
            if normalization not in NORMALIZATIONS:
                raise ValueError(f"unknown normalization {normalization!r}; choose one of {NORMALIZATIONS} or a number")
            return getattr(self, normalization)
        if normalization <= 0:
            raise ValueError(f"an external normaliser must be positive, got {normalization}")
        return torch.as_tensor(float(normalization), device=self.weighted_sum.device)

    def loss(self, normalization: str | float = "nonzero") -> Tensor:
        """weighted_sum / Z for a batch that is a whole step on its own (evaluation, single-batch use)."""
        return safe_divide(self.weighted_sum, self.normalizer(normalization))


def safe_divide(weighted_sum: Tensor, normalizer: Tensor) -> Tensor:
    """Divide, treating Z = 0 as 1: then the numerator is 0 and the loss is a zero that stays in the graph,
    so a step without trainable tokens neither produces NaN nor skips a collective in distributed training."""
    return weighted_sum / torch.where(normalizer > 0, normalizer, torch.ones_like(normalizer)).to(weighted_sum.dtype)


def normalizer_counts(labels: Tensor, weights: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """(nonzero, weight_sum, tokens) of a batch as one float64 tensor, from labels and weights only.

    float64 keeps weight sums exact enough to be identical however the step is split into micro-batches.
    """
    valid = labels != ignore_index
    w = torch.where(valid, weights.to(torch.float64), 0.0)
    return torch.stack([(w != 0).sum().to(torch.float64), w.sum(), valid.sum().to(torch.float64)])


def normalizer_from_counts(counts: Tensor, normalization: str | float) -> Tensor:
    """Z of a step from its `normalizer_counts`: a name from NORMALIZATIONS picks its count, a number is Z itself
    (float64, on the counts' device). The one mapping from a normaliser name to a count of a whole step."""
    if isinstance(normalization, str):
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {normalization!r}; choose one of {NORMALIZATIONS} or a number")
        return counts[NORMALIZATIONS.index(normalization)]
    return torch.tensor(normalization, dtype=torch.float64, device=counts.device)


def weighted_nll(
    logits: Tensor,
    labels: Tensor,
    weights: Tensor,
    response_mask: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    *,
    dynamic: DynamicWeight | None = None,
    side: Tensor | None = None,
    label_smoothing: float = 0.0,
) -> LossSums:
    """Weighted NLL sums of logits (..., V) against labels (...) with per-position weights (...).

    `labels`/`weights` are aligned with `logits` (no shifting here). `response_mask` (bool, same shape as
    labels) splits the diagnostics into prompt and response; without it every position counts as response.
    `dynamic`: a `witune.loss.dynamic.DynamicWeight` whose detached factor multiplies each weight (`side`: its
    per-token input, aligned with labels). `label_smoothing` eps: each token's loss is (1 - eps) * nll + eps *
    mean over the vocabulary of -log p (transformers' `LabelSmoother`), times its weight. The diagnostics
    (`prompt_nll`, `response_nll`) stay the plain, unweighted nll.
    """
    vocab = logits.shape[-1]
    if labels.shape != logits.shape[:-1] or weights.shape != labels.shape:
        raise ValueError(
            f"shape mismatch: logits {tuple(logits.shape)}, labels {tuple(labels.shape)}, weights {tuple(weights.shape)}"
        )
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    labels = labels.reshape(-1)
    valid = labels != ignore_index
    w = torch.where(valid, weights.reshape(-1).to(torch.float32), 0.0)
    flat_side = None if side is None else side.reshape(-1).to(torch.float32)
    weighted_sum, nll, parts = _ChunkedWeightedCE.apply(
        logits.reshape(-1, vocab), labels.clamp_min(0), w, dynamic, flat_side, float(label_smoothing)
    )
    return LossSums.from_rows(weighted_sum, nll, w, valid, response_mask, parts)


def weighted_loss(
    logits: Tensor,
    labels: Tensor,
    weights: Tensor,
    normalization: str | float = "nonzero",
    ignore_index: int = IGNORE_INDEX,
    *,
    dynamic: DynamicWeight | None = None,
) -> Tensor:
    """The normalised weighted loss of one batch, like `F.cross_entropy(..., reduction="mean")`.

    For training with gradient accumulation or several processes, use `weighted_nll` and a step normaliser.
    """
    return weighted_nll(logits, labels, weights, ignore_index=ignore_index, dynamic=dynamic).loss(normalization)


class _ChunkedWeightedCE(torch.autograd.Function):
    """sum_i w_i f_i * ((1 - eps) nll_i + eps * smooth_i) over rows of a 2-D logits matrix, chunk by chunk in fp32,
    with nll_i = logsumexp(x_i) - x_i[y_i], smooth_i = logsumexp(x_i) - mean(x_i) and f_i the detached dynamic
    factor (1 without a rule).

    Returns (weighted sum, per-row nll, per-row contribution to the sum); the last two are detached diagnostics.
    Rows with w_i = 0 (ignored positions are given w_i = 0 by the caller) get exactly zero gradient.
    """

    @staticmethod
    def forward(
        ctx, logits: Tensor, labels: Tensor, w: Tensor, rule: DynamicWeight | None, side: Tensor | None, eps: float
    ):
        n, vocab = logits.shape
        rows = max(1, _CHUNK_ELEMENTS // max(vocab, 1))
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        target = torch.empty(n, dtype=torch.float32, device=logits.device)
        mean = torch.empty_like(lse) if eps else None
        entropy = torch.empty_like(lse) if rule is not None and rule.needs_entropy else None
        for s in range(0, n, rows):
            x = logits[s : s + rows].float()
            chunk_lse = torch.logsumexp(x, dim=-1)
            lse[s : s + rows] = chunk_lse
            target[s : s + rows] = x.gather(1, labels[s : s + rows, None]).squeeze(1)
            if mean is not None:
                mean[s : s + rows] = x.mean(dim=-1)
            if entropy is not None:
                entropy[s : s + rows] = torch.special.entr((x - chunk_lse[:, None]).exp_()).sum(dim=-1)
        nll = lse - target  # for every row, weighted or not: the per-role diagnostics use it
        if rule is not None:
            w = w * row_factor(rule, nll, entropy, side)
        row_loss = nll if mean is None else (1 - eps) * nll + eps * (lse - mean)
        parts = row_loss * w
        weighted_sum = parts.sum()
        ctx.save_for_backward(logits, labels, w, lse)
        ctx.eps = eps
        ctx.mark_non_differentiable(nll, parts)
        return weighted_sum, nll, parts

    @staticmethod
    def backward(ctx, grad_sum: Tensor, _grad_nll: Tensor | None, _grad_parts: Tensor | None):
        logits, labels, w, lse = ctx.saved_tensors
        eps = ctx.eps
        n, vocab = logits.shape
        rows = max(1, _CHUNK_ELEMENTS // max(vocab, 1))
        grad = torch.empty_like(logits)
        scale = w * grad_sum.float()
        # w * softmax(x) = exp(x - lse + log w): folding the scale into the exponent saves a full pass over the
        # chunk (w = 0 gives exp(-inf) = 0). Only valid for scale >= 0; a negative grad_sum takes the plain path.
        folded = bool((scale >= 0).all())
        shift = lse - scale.log() if folded else lse
        for s in range(0, n, rows):
            e = min(s + rows, n)
            sc = scale[s:e]
            if not bool((sc != 0).any()):  # e.g. a chunk of prompt tokens at lambda_p = 0
                grad[s:e].zero_()
                continue
            # d/dx [lse(x) - x_y] = softmax(x) - onehot(y); smoothing adds eps * (onehot(y) - 1/V).
            # fp32 logits are written straight into grad.
            p = grad[s:e] if logits.dtype == torch.float32 else None
            p = torch.sub(logits[s:e].float(), shift[s:e, None], out=p)
            p.exp_()
            if not folded:
                p.mul_(sc[:, None])
            p.scatter_add_(1, labels[s:e, None], (-sc if not eps else -(1 - eps) * sc)[:, None])
            if eps:
                p.sub_((sc * (eps / vocab))[:, None])
            if p.dtype != grad.dtype:
                grad[s:e] = p
        return grad, None, None, None, None, None
