"""Sharded training on CPU: FSDP2 (torch's fully_shard, `fsdp: true`) and DeepSpeed ZeRO-2/3 (accelerate launch),
2 processes over gloo.

For each: 2 processes x batch 2 x accumulation 2 take the same step as 1 process x batch 8 (fp32, SGD, the
tolerances of test_train_invariance: loss < 1e-6 relative, parameters < 1e-4 of the update); a sharded
checkpoint resumes bit for bit (AdamW, so the optimizer's sharded state must come back too); the final model/
loads in AutoModelForCausalLM. One launch per backend runs all of its trainings (starting processes is the
cost here).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import test_train_invariance as invariance
import torch
import yaml
from launch_train import TORCHRUN, launch
from safetensors.torch import load_file
from test_train_invariance import _assert_same_step, _overrides, _run

from witune.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]
setup_dir = invariance.setup_dir  # the tiny model and the 8 samples of very different lengths (a fixture)


def _jobs(root: Path, tmp: Path, **kw) -> list[dict]:
    """One step to compare with 1 process; then 3 AdamW steps with a checkpoint each, rewound to step 1 and
    resumed."""
    split = dict(per_device_batch_size=2, grad_accum=2, **kw)
    resume = _overrides(
        root,
        tmp / "resume",
        "nonzero",
        optimizer="adamw",
        learning_rate=1e-2,
        max_steps=3,
        save_every=1,
        save_total_limit=0,
        **split,
    )
    return [
        {"tag": "step", "overrides": _overrides(root, tmp / "step", "nonzero", **split)},
        {"tag": "full", "overrides": resume},
        {"rewind": tmp / "resume", "to_step": 1},
        {"tag": "resumed", "overrides": resume, "resume": True},
    ]


def _check(root: Path, tmp: Path, results: dict[str, tuple[float, Path]]) -> None:
    from transformers import AutoModelForCausalLM

    assert sorted(results) == ["full", "resumed", "step"]
    loss, model_dir = results["step"]
    _assert_same_step(root, (loss, load_file(str(model_dir / "model.safetensors"))), _run(root, tmp, "nonzero", 8, 1))
    out = tmp / "resume"
    ref = load_file(str(out / "model-ref" / "model.safetensors"))
    resumed = load_file(str(out / "model" / "model.safetensors"))
    assert ref.keys() == resumed.keys() and all(torch.equal(ref[k], resumed[k]) for k in ref)
    init = load_file(str(root / "model" / "model.safetensors"))
    assert all(not torch.equal(ref[k], init[k]) for k in ref), "a tensor did not train: the test would prove less"
    metrics, metrics_ref = read_metrics(out / "metrics.jsonl"), read_metrics(out / "metrics-ref.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert [m["loss"] for m in metrics] == [m["loss"] for m in metrics_ref]
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert model(torch.tensor([[1, 2, 3]])).logits.shape[-1] == model.config.vocab_size


@pytest.mark.slow
def test_fsdp2_two_processes(setup_dir, tmp_path):
    results = launch(TORCHRUN, _jobs(setup_dir, tmp_path, fsdp=True))
    _check(setup_dir, tmp_path, results)
    shards = sorted(p.name for p in (tmp_path / "resume" / "checkpoints" / "step-2" / "sharded").glob("*.distcp"))
    assert len(shards) == 2, shards  # one file per process: the checkpoint is sharded


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_two_processes(setup_dir, tmp_path, stage):
    """accelerate launch with the shipped DeepSpeed example, set to 2 processes, fp32 and ZeRO stage 2 or 3."""
    config = yaml.safe_load((REPO / "examples" / "accelerate" / "deepspeed_zero3.yaml").read_text())
    config.update(num_processes=2, mixed_precision="no")
    config["deepspeed_config"]["zero_stage"] = stage
    path = tmp_path / "accelerate.yaml"
    path.write_text(yaml.safe_dump(config))
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(path)]
    results = launch(launcher, _jobs(setup_dir, tmp_path))
    _check(setup_dir, tmp_path, results)
    # DeepSpeed's own sharded checkpoint: the optimizer state in one file per process.
    ckpt = tmp_path / "resume" / "checkpoints" / "step-2"
    shards = sorted(p.name for p in (ckpt / "pytorch_model").glob("zero_pp_rank_*_optim_states.pt"))
    assert len(shards) == 2, shards
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == 2
