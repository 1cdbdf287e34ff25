"""The weighted instruction-tuning loss (plain torch; no transformers import)."""

from witune.loss.chunked import weighted_nll_from_hidden
from witune.loss.normalization import Normalization, normalization_label, parse_normalization
from witune.loss.weighted import (
    IGNORE_INDEX,
    NORMALIZATIONS,
    LossSums,
    normalizer_counts,
    normalizer_from_counts,
    safe_divide,
    weighted_loss,
    weighted_nll,
)

__all__ = [
    "IGNORE_INDEX",
    "NORMALIZATIONS",
    "LossSums",
    "Normalization",
    "normalizer_counts",
    "normalization_label",
    "normalizer_from_counts",
    "parse_normalization",
    "safe_divide",
    "weighted_loss",
    "weighted_nll",
    "weighted_nll_from_hidden",
]
