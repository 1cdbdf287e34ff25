"""`witune train`: flat config, an accelerate loop with a per-step normaliser, atomic checkpoints."""

from witune.train.config import PRESETS, TrainConfig, load_config, to_yaml
from witune.train.engine import TrainResult, train

__all__ = ["PRESETS", "TrainConfig", "TrainResult", "load_config", "to_yaml", "train"]
