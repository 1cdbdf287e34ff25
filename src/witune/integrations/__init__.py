"""witune's weighted loss inside the trainers people already use: transformers `Trainer`, TRL `SFTTrainer`.

    from witune.integrations import weighted_dataset, WeightedCollator, WeightedTrainer
    from witune.integrations.trl import WeightedSFTTrainer      # needs the optional `trl` package

Conventions here are Hugging Face's, not `witune.data.collate`'s: `labels` are *unshifted* (the model shifts
them), `loss_weights[i]` is the weight of predicting token i from tokens < i, and `labels[i] == -100` exactly
where `loss_weights[i] == 0`, so that the Trainer's own `num_items_in_batch` is the WIT normaliser.
Nothing in this package is imported by `import witune` or `witune.loss`.
"""

from witune.integrations.collate import WeightedCollator
from witune.integrations.dataset import weighted_dataset
from witune.integrations.hf_trainer import (
    WeightedLossMixin,
    WeightedTrainer,
    causal_lm_loss_sums,
)

__all__ = ["WeightedCollator", "WeightedLossMixin", "WeightedTrainer", "causal_lm_loss_sums", "weighted_dataset"]
