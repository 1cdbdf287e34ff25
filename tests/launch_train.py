"""Run a list of `witune.train.train` jobs in every process of a torchrun / accelerate launch (multi-process tests).

argv[1] is a JSON list of jobs, run in order by every process:
  {"tag": name, "overrides": {...}, "resume": false}  train; the main process prints "RESULT tag loss model_dir"
  {"rewind": output_dir, "to_step": k}  the main process moves model/ to model-ref/, copies metrics.jsonl to
                                        metrics-ref.jsonl and removes the checkpoints after step k, so that a
                                        resume retrains those steps (as after a kill)
Processes wait for each other between jobs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch.distributed as dist

from witune.train import load_config, train
from witune.train.checkpoint import checkpoint_dirs


def launch(launcher: list[str], jobs: list[dict], env: dict[str, str] | None = None) -> dict[str, tuple[float, Path]]:
    """From a test: run `jobs` under `launcher` (e.g. torchrun's arguments up to the script); {tag: (loss, model/)}.
    One thread per process: two processes share the two cores of the test machine."""
    cmd = [*launcher, str(Path(__file__)), json.dumps(jobs, default=str)]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=full_env)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-6000:])
    found = [ln.split() for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    return {tag: (float(loss), Path(model_dir)) for _, tag, loss, model_dir in found}


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def main() -> None:
    for job in json.loads(sys.argv[1]):
        if "rewind" in job:
            out = Path(job["rewind"])
            if _main_process():
                shutil.move(out / "model", out / "model-ref")
                shutil.copy(out / "metrics.jsonl", out / "metrics-ref.jsonl")
                for step, path in checkpoint_dirs(out / "checkpoints"):
                    if step > job["to_step"]:
                        shutil.rmtree(path)
            _barrier()
            continue
        result = train(load_config(overrides=job["overrides"]), resume=job.get("resume", False))
        if _main_process():
            print("RESULT", job["tag"], result.final_loss, result.model_dir, flush=True)
        _barrier()


if __name__ == "__main__":
    main()
