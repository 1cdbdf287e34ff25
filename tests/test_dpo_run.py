"""`witune dpo` runs: SIGKILL + `--resume` continues the same run (tiny model); on SmolLM2-135M a few steps of
DPO on self-play pairs built from real records lower the DPO loss and raise the reward margin on held-out
pairs (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from witune.train.checkpoint import checkpoint_dirs, latest_checkpoint
from witune.train.metrics import read_metrics

pytest.importorskip("trl")
STEPS = 8


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def _pairs(path: Path) -> Path:
    with open(path, "w") as f:
        for i in range(12):
            f.write(
                json.dumps(
                    {
                        "prompt": f"Question {i}: what is {i} plus one?",
                        "chosen": f" It is {i + 1}.",
                        "rejected": f" I do not know what {i} is.",
                    }
                )
                + "\n"
            )
    return path


def _cmd(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    sets = dict(
        model=model,
        data=data,
        output_dir=out,
        max_steps=STEPS,
        per_device_batch_size=2,
        learning_rate=1e-3,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        save_every=1,
        save_total_limit=2,
        progress=False,
        seed=3,
    )
    return [
        sys.executable,
        "-m",
        "witune.cli.dpo",
        *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")],
        *extra,
    ]


def test_sigkill_then_resume_continues_the_same_run(tiny_model_dir, tmp_path):
    data = _pairs(tmp_path / "pairs.jsonl")
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    proc = subprocess.Popen(
        _cmd(tiny_model_dir, data, killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 600
    while not (killed / "checkpoints" / "step-3").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert not (killed / "model").exists(), "the run finished before it was killed: the test proves nothing"
    at = latest_checkpoint(killed / "checkpoints")
    assert at is not None and int(at.name.split("-")[1]) < STEPS

    resumed = subprocess.run(_cmd(tiny_model_dir, data, killed, "--resume"), env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {at}" in resumed.stdout + resumed.stderr
    full = subprocess.run(_cmd(tiny_model_dir, data, ref), env=_env(), capture_output=True, text=True)
    assert full.returncode == 0, full.stderr[-3000:]

    a, b = read_metrics(killed / "metrics.jsonl"), read_metrics(ref / "metrics.jsonl")
    assert [m["step"] for m in a] == list(range(1, STEPS + 1))  # each step once: the log reads like one run
    # The same run: same data order, same optimizer state after the resume, so the same losses and margins.
    assert [m["loss"] for m in a] == pytest.approx([m["loss"] for m in b], rel=1e-4, abs=1e-6)
    assert a[-1]["rewards_margins"] == pytest.approx(b[-1]["rewards_margins"], rel=1e-3, abs=1e-6)
    assert a[-1]["loss"] < a[0]["loss"]
    assert len(checkpoint_dirs(killed / "checkpoints")) == 2 and not (killed / ".trainer").exists()
    assert (killed / "model" / "config.json").is_file()


@pytest.mark.slow
def test_dpo_on_smollm2_lowers_loss_and_raises_held_out_margin(smollm2_dir, shared_data, tmp_path):
    from witune.dpo.config import load_dpo_config
    from witune.dpo.data import load_preferences
    from witune.dpo.pairs import make_pairs
    from witune.dpo.run import run_dpo

    # Self-play pairs from real records: the data's answer is chosen, SmolLM2's own greedy answer rejected.
    pairs = make_pairs(
        str(shared_data / "train" / "alpaca_seed_tasks.jsonl"),
        str(smollm2_dir),
        tmp_path / "pairs.jsonl",
        limit=16,
        max_new_tokens=24,
        progress=False,
    )
    assert pairs.written >= 12
    assert len(load_preferences(pairs.path).records) == pairs.written
    cfg = load_dpo_config(
        None,
        {
            "model": str(smollm2_dir),
            "data": str(pairs.path),
            "output_dir": str(tmp_path / "dpo"),
            "max_steps": 6,
            "per_device_batch_size": 2,
            "learning_rate": 5e-6,
            "beta": 0.1,
            "lr_scheduler": "constant",
            "warmup_ratio": 0.0,
            "eval_fraction": 0.25,
            "max_length": 192,
            "progress": False,
        },
    )
    r = run_dpo(cfg)
    before, after = r.eval["before"], r.eval["after"]
    print(
        f"SmolLM2-135M-Instruct, TRL DPOTrainer, {pairs.written} self-play pairs: held-out DPO loss "
        f"{before['eval_loss']:.4f} -> {after['eval_loss']:.4f}, reward margin "
        f"{before['eval_rewards/margins']:.4f} -> {after['eval_rewards/margins']:.4f}"
    )
    assert before["eval_loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference before any step
    assert after["eval_loss"] < before["eval_loss"] - 0.01
    assert after["eval_rewards/margins"] > before["eval_rewards/margins"] + 0.05
    assert (r.model_dir / "config.json").is_file()


def test_a_finished_run_folder_is_protected(tiny_model_dir, tmp_path):
    """Like `witune train`: a non-empty output_dir needs --resume or --overwrite, and nothing in it is touched."""
    from witune.data.errors import ConfigError
    from witune.dpo.config import load_dpo_config
    from witune.dpo.run import run_dpo

    out = tmp_path / "old-run"
    (out / "checkpoints" / "step-4").mkdir(parents=True)
    (out / "config.yaml").write_text("prompt_weight: 0.1\n")
    cfg = load_dpo_config(
        None,
        {
            "model": str(tiny_model_dir),
            "data": str(_pairs(tmp_path / "pairs.jsonl")),
            "output_dir": str(out),
            "max_steps": 1,
            "progress": False,
        },
    )
    with pytest.raises(ConfigError, match="not empty"):
        run_dpo(cfg)
    assert (out / "checkpoints" / "step-4").is_dir() and (out / "config.yaml").read_text() == "prompt_weight: 0.1\n"
