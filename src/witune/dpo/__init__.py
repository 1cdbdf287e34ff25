"""Preference optimisation after weighted instruction tuning (WIT's claim: a WIT model is a better DPO start).

`witune dpo` runs TRL's DPOTrainer (optional dependency: pip install "witune[trl]") on a model `witune train`
wrote; `witune dpo-pairs` builds self-play pairs (reference chosen, model answer rejected) from any SFT data.
Importing this package needs neither TRL nor torch.
"""

from witune.dpo.config import DPOConfig, load_dpo_config
from witune.dpo.data import PreferenceData, load_preferences

__all__ = ["DPOConfig", "PreferenceData", "load_dpo_config", "load_preferences"]
