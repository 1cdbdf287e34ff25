"""A dynamic weight defined outside witune, as a user's own module (imported by its component path
"dynamic_rules:EntropyWeight" in the tests, with tests/ on PYTHONPATH in every process that trains)."""

from __future__ import annotations

import torch

from witune.loss import DynamicWeight, TokenStats


class EntropyWeight(DynamicWeight):
    """f_t = exp(-alpha * H_t): tokens the model is unsure about (high entropy) count less; alpha sets how much."""

    name = "entropy_weight"
    needs_entropy = True

    def __init__(self, alpha: float = 1.0):
        self.alpha = float(alpha)

    def factor(self, stats: TokenStats) -> torch.Tensor:
        assert stats.entropy is not None
        return torch.exp(-self.alpha * stats.entropy)
