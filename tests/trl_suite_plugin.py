"""A pytest plugin that runs TRL's own SFTTrainer tests on this machine, optionally with witune's trainer.

Loaded by `test_trl_suite.py` into a separate pytest run (`-p trl_suite_plugin`) over a TRL checkout's
tests/test_sft_trainer.py. The same two adaptations apply to the stock run and the substituted run:
- without a GPU, every SFTConfig gets `use_cpu=True` (SFTConfig defaults to bf16, which transformers refuses
  on a CPU-only machine);
- with `WITUNE_TRL_SUBSTITUTE=1`, `trl.SFTTrainer` is `witune.integrations.trl.WeightedSFTTrainer` before the
  test module imports it (the only difference between the two runs).
The hub model the tests name is a local folder the runner puts in the working directory (offline machine).
Nothing happens on import (witune's own suite imports this file to look for doctests): only `pytest_configure`,
which pytest calls for a plugin it was told to load, changes anything.
"""

from __future__ import annotations

import os
from typing import Any


def pytest_configure(config: Any) -> None:
    import torch
    import trl

    if not torch.cuda.is_available():
        post_init = trl.SFTConfig.__post_init__

        def cpu_post_init(self: Any) -> None:
            self.use_cpu = True
            post_init(self)

        trl.SFTConfig.__post_init__ = cpu_post_init  # type: ignore[method-assign]
    if os.environ.get("WITUNE_TRL_SUBSTITUTE") == "1":
        from witune.integrations.trl import WeightedSFTTrainer

        trl.SFTTrainer = WeightedSFTTrainer  # type: ignore[misc]
