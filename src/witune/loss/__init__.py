"""The weighted instruction-tuning loss (plain torch; no transformers import)."""

from witune.loss.chunked import weighted_nll_from_hidden
from witune.loss.dynamic import DFT, DYNAMIC_WEIGHTS, DynamicWeight, TokenStats, dynamic_weight, register_dynamic_weight
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
    "DFT",
    "DYNAMIC_WEIGHTS",
    "IGNORE_INDEX",
    "NORMALIZATIONS",
    "DynamicWeight",
    "LossSums",
    "Normalization",
    "TokenStats",
    "dynamic_weight",
    "normalizer_counts",
    "normalization_label",
    "normalizer_from_counts",
    "parse_normalization",
    "register_dynamic_weight",
    "safe_divide",
    "weighted_loss",
    "weighted_nll",
    "weighted_nll_from_hidden",
]
