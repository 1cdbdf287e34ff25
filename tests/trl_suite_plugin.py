"""A pytest plugin that runs TRL's own SFTTrainer tests on this machine, optionally with witune's trainer.

Loaded by `test_trl_suite.py` into a separate pytest run (`-p trl_suite_plugin`) over a TRL checkout's
tests/test_sft_trainer.py. The same two adaptations apply to the stock run and the substituted run:
- without a GPU, every SFTConfig gets `use_cpu=True` (SFTConfig defaults to bf16, which transformers refuses
  on a CPU-only machine);
- with `WITUNE_TRL_SUBSTITUTE=1`, `trl.SFTTrainer` is `witune.integrations.trl.WeightedSFTTrainer` before the
  test module imports it (the only difference between the two runs).
The hub model the tests name is a local folder the runner puts in the working directory (offline machine).
"""

from __future__ import annotations

import os

import torch
import trl

if not torch.cuda.is_available():
    _post_init = trl.SFTConfig.__post_init__

    def _cpu_post_init(self) -> None:
        self.use_cpu = True
        _post_init(self)

    trl.SFTConfig.__post_init__ = _cpu_post_init  # type: ignore[method-assign]

if os.environ.get("WITUNE_TRL_SUBSTITUTE") == "1":
    from witune.integrations.trl import WeightedSFTTrainer

    trl.SFTTrainer = WeightedSFTTrainer  # type: ignore[misc]
