"""Checkpoints: atomic folders, and SIGKILL + `--resume` gives bit-for-bit the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from witune.models.tiny import make_tiny_model
from witune.train.checkpoint import STATE_FILE, checkpoint_dirs, latest_checkpoint
from witune.train.metrics import read_metrics

STEPS = 10


@pytest.fixture(scope="module")
def setup_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    make_tiny_model(root / "model")
    words = "a small dog reads the question and writes a clear answer step by step".split()
    with open(root / "data.jsonl", "w") as f:
        for i in range(12):
            f.write(
                json.dumps(
                    {"instruction": " ".join(words[: 2 + i % 9]), "input": "", "output": " ".join(words[i % 5 :])}
                )
                + "\n"
            )
    return root


def _cmd(root: Path, out: Path, *extra: str, **settings: object) -> list[str]:
    sets: dict[str, object] = dict(
        model=root / "model",
        data=root / "data.jsonl",
        output_dir=out,
        max_steps=STEPS,
        per_device_batch_size=2,
        grad_accum=2,
        learning_rate=1e-3,
        warmup_ratio=0.2,
        prompt_weight=0.1,
        save_every=1,
        save_total_limit=2,
        deterministic=True,
        progress=False,
        seed=7,
    )
    sets.update(settings)
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    return [sys.executable, "-m", "witune.cli.train", *args, *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_checkpoint_state_round_trips_and_reads_older_checkpoints(tmp_path):
    """The typed trainer state writes what it reads, and reads a checkpoint of an older witune (fewer keys, one it
    no longer knows): the resume checks skip what was not stored and still refuse what was."""
    from witune.data.errors import ConfigError
    from witune.train import runfolder
    from witune.train.checkpoint import CheckpointState
    from witune.train.config import TrainConfig

    state = CheckpointState(3, 0, 3, 6, {"lr": 1e-4}, rows=10, data_sha256="ab", global_batch=4)
    (tmp_path / STATE_FILE).write_text(json.dumps(state.to_json()))
    assert CheckpointState.read(tmp_path) == state
    old = CheckpointState.from_json({"step": 2, "epoch": 0, "rows": 10, "data_sha256": "ab", "gone": 1})
    assert (old.step, old.rows, old.total_steps, old.global_batch, old.config) == (2, 10, None, None, None)
    new = TrainConfig(model="m", data="d.jsonl")
    runfolder.check_resume(tmp_path, None, new, old, "ab", 10, global_batch=8, total=6)  # no batch stored: passes
    with pytest.raises(ConfigError, match=r"training data itself \(10 rows -> 11 rows"):
        runfolder.check_resume(tmp_path, None, new, old, "cd", 11)
    with pytest.raises(ConfigError, match="at step 2, past the 1 steps"):
        runfolder.check_resume(tmp_path, None, new, old, total=1)


def test_latest_checkpoint_ignores_incomplete(tmp_path):
    root = tmp_path / "checkpoints"
    for name, complete in [("step-2", True), ("step-5", True), ("step-9", False), (".tmp-step-12", True)]:
        (root / name).mkdir(parents=True)
        if complete:
            (root / name / STATE_FILE).write_text("{}")
    assert latest_checkpoint(root) == root / "step-5"
    assert [s for s, _ in checkpoint_dirs(root)] == [2, 5]
    assert latest_checkpoint(tmp_path / "none") is None


# bf16: autocast over fp32 master weights; bf16_weights: a LoRA run whose base weights are stored in bf16;
# fp32_packed: best-fit-decreasing packing (the ~92-token samples 2 per row: 6 rows, 2 steps an epoch, so the
# 10 steps cross epochs and their reshuffles).
PRECISIONS = {
    "fp32": {},
    "fp32_packed": {"pack": "bfd", "max_length": 200},
    "bf16": {"precision": "bf16"},
    "bf16_weights": {"precision": "bf16_weights", "lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-2},
}


@pytest.mark.parametrize(
    "precision",
    [
        "fp32",
        "fp32_packed",
        pytest.param("bf16", marks=pytest.mark.slow),
        pytest.param("bf16_weights", marks=pytest.mark.slow),
    ],
)
def test_sigkill_then_resume_is_bit_identical(setup_dir, tmp_path, precision):
    settings = PRECISIONS[precision]
    killed_out, ref_out = tmp_path / "killed", tmp_path / "reference"
    proc = subprocess.Popen(
        _cmd(setup_dir, killed_out, **settings), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while not (killed_out / "checkpoints" / "step-3").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert not (killed_out / "model").exists(), "the run finished before it was killed: the test proves nothing"
    killed_at = latest_checkpoint(killed_out / "checkpoints")
    assert killed_at is not None and int(killed_at.name.split("-")[1]) < STEPS

    resumed = subprocess.run(
        _cmd(setup_dir, killed_out, "--resume", **settings), env=_env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    ref = subprocess.run(_cmd(setup_dir, ref_out, **settings), env=_env(), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-3000:]

    a = load_file(str(killed_out / "model" / "model.safetensors"))
    b = load_file(str(ref_out / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    if precision == "bf16_weights":  # the merged model of a LoRA run on bf16 base weights is bf16
        assert {t.dtype for t in a.values()} == {torch.bfloat16}
    # The resumed log reads like the uninterrupted one: each step once, same losses.
    ma, mb = read_metrics(killed_out / "metrics.jsonl"), read_metrics(ref_out / "metrics.jsonl")
    assert [m["step"] for m in ma] == list(range(1, STEPS + 1))
    assert [m["loss"] for m in ma] == [m["loss"] for m in mb]
    assert len(checkpoint_dirs(killed_out / "checkpoints")) == 2  # save_total_limit
