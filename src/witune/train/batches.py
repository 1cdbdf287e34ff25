"""Deterministic global data order: which samples every process sees at every micro-step.

No DataLoader sharding: the schedule is a pure function of (seed, epoch, step), so it is the same however
the step is split, and a resumed run only needs the step number to continue where it stopped.

* Epoch e uses the permutation `torch.randperm(n, generator=seed + e)` of the row indices.
* The global batch of step s (within the epoch) is `perm[s*G : (s+1)*G]`, `G = B * A * W`
  (B = per-device batch size, A = gradient-accumulation steps, W = processes).
* Micro-step i of process r takes positions `[(i*W + r)*B, (i*W + r + 1)*B)` of that global batch:
  the micro-steps walk through the batch in order, each one spread over the processes.

Hence batch 8 x accumulation 1, batch 2 x accumulation 4 and 2 processes x batch 2 x accumulation 2 all train
step s on exactly the same 8 samples. The last global batch of an epoch may be incomplete (`drop_last=False`):
some micro-batches are then smaller or empty, and the step normaliser counts only the tokens that are there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Schedule:
    n_rows: int
    per_device_batch_size: int
    grad_accum: int
    world_size: int
    seed: int
    drop_last: bool = False

    @property
    def global_batch(self) -> int:
        return self.per_device_batch_size * self.grad_accum * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        if self.drop_last:
            return self.n_rows // self.global_batch
        return -(-self.n_rows // self.global_batch)

    def permutation(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.n_rows, generator=g).tolist()

    def step_indices(self, epoch: int, step_in_epoch: int) -> list[int]:
        """The global batch of one optimizer step (all processes, all micro-steps)."""
        g = self.global_batch
        return self.permutation(epoch)[step_in_epoch * g : (step_in_epoch + 1) * g]

    def micro_batches(self, epoch: int, step_in_epoch: int, rank: int) -> list[list[int]]:
        """Row indices of this process's `grad_accum` micro-batches for the step (some may be empty)."""
        batch = self.step_indices(epoch, step_in_epoch)
        b, w = self.per_device_batch_size, self.world_size
        return [batch[(i * w + rank) * b : (i * w + rank + 1) * b] for i in range(self.grad_accum)]

    def locate(self, global_step: int) -> tuple[int, int]:
        """(epoch, step within the epoch) of a 0-based global optimizer step."""
        return divmod(global_step, self.steps_per_epoch)
