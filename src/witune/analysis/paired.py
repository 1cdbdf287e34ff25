"""Two models on the same items: the mean difference with its paired standard error, and what it means.

Per-item differences cancel the items' shared difficulty, so the paired SE of a difference is far smaller
than the two models' own SEs combined; "within noise" below 2 SE. Used by `witune demo`'s headline (held-out
response NLL per record, benchmark accuracy per item) and the standard errors of its results rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def mean_se(values: Sequence[float]) -> float:
    """Standard error of a mean (sample sd / sqrt(n)); NaN below 2 values."""
    n = len(values)
    if n < 2:
        return math.nan
    mean = sum(values) / n
    return math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1) / n)


def binomial_se(items: Sequence[float]) -> float:
    """Standard error of an accuracy from 0/1 items, sqrt(p (1 - p) / n); NaN below 2 items."""
    if len(items) < 2:
        return math.nan
    p = sum(items) / len(items)
    return math.sqrt(p * (1 - p) / len(items))


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean of b - a over the same items and its paired standard error (sd of the differences / sqrt(n)).

    >>> mean, se = paired_difference([1, 0, 1, 1], [1, 1, 1, 0]); (mean, round(se, 3))
    (0.0, 0.408)
    """
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired difference needs two equal-length lists of >= 2 items, got {len(a)} and {len(b)}")
    d = [y - x for x, y in zip(a, b)]
    return sum(d) / len(d), mean_se(d)


def verdict(diff: float, se: float, better_if_lower: bool) -> str:
    """ "within noise" when |diff| < 2 SE, else which way it went."""
    if (se == 0 and diff == 0) or abs(diff) < 2 * se:
        return "within noise"
    better = diff < 0 if better_if_lower else diff > 0
    return "better" if better else "worse"


@dataclass(frozen=True)
class Comparison:
    """b against a on the same items: a's mean, the paired difference b - a and its SE, the verdict."""

    n: int
    mean_a: float
    diff: float
    se: float
    verdict: str
    identical: bool  # every item scored alike


def compare(a: Sequence[float], b: Sequence[float], better_if_lower: bool) -> Comparison | None:
    """The paired comparison over the items both lists have a finite value for; None below 2 such items."""
    pairs = [(x, y) for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
    if len(pairs) < 2 or len(a) != len(b):
        return None
    xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
    diff, se = paired_difference(xs, ys)
    return Comparison(len(pairs), sum(xs) / len(xs), diff, se, verdict(diff, se, better_if_lower), xs == ys)
