"""How far fine-tuning moved a model: the L2 distance of the tuned weights from the base weights.

Lives with the models (below the sweep and the analysis) because both use it: the sweep measures it for
every trained point, the analysis (PLW paper, section 5.3) reads it as a training-dynamics diagnostic.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def l2_distance(tuned: Mapping[str, Any], base: Mapping[str, Any]) -> float:
    """L2 distance between two state dicts (tensors or arrays) over the parameters they share."""
    total = 0.0
    for name, value in tuned.items():
        if name in base:
            a = np.asarray(value.detach().float().cpu() if hasattr(value, "detach") else value, dtype=float)
            b_val = base[name]
            b = np.asarray(b_val.detach().float().cpu() if hasattr(b_val, "detach") else b_val, dtype=float)
            total += float(np.sum((a - b) ** 2))
    return float(np.sqrt(total))


def weight_distance(base_model: str, tuned_dir: Path) -> float:
    """L2 norm of (tuned - base) over all parameters the two models share (tied weights counted once)."""
    from witune.models.load import load_model

    base = dict(load_model(base_model).named_parameters())
    return l2_distance(dict(load_model(str(tuned_dir)).named_parameters()), base)
