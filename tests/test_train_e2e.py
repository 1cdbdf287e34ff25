"""End to end on a tiny model: output folder, loading with transformers, resume, LoRA, packing, bf16."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from witune.cli.main import main
from witune.models.tiny import make_tiny_model
from witune.train import load_config, train
from witune.train.metrics import StepMetrics, read_metrics


@pytest.fixture(scope="module")
def setup_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    make_tiny_model(root / "model")
    words = "the teacher explains the main idea of a short story to every user before lunch".split()
    with open(root / "chat.jsonl", "w") as f:
        for i in range(10):
            f.write(
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": " ".join(words[i % 4 : 6 + i])},
                            {"role": "assistant", "content": " ".join(words[: 3 + i % 7])},
                        ]
                    }
                )
                + "\n"
            )
    return root


def _sets(root: Path, out: Path, **kw) -> list[str]:
    values = dict(
        model=root / "model",
        data=root / "chat.jsonl",
        output_dir=out,
        per_device_batch_size=2,
        grad_accum=2,
        learning_rate=1e-3,
        prompt_weight=0.1,
        max_steps=3,
        save_every=2,
        progress=False,
    )
    values.update(kw)
    return ["train"] + [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def test_train_outputs_and_resume(setup_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    assert main(_sets(setup_dir, out)) == 0
    model_dir = out / "model"
    for name in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ):
        assert (model_dir / name).is_file(), name
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok("the teacher", return_tensors="pt").input_ids
    assert model(ids).logits.shape[-1] == model.config.vocab_size
    before = load_file(str(setup_dir / "model" / "model.safetensors"))
    after = load_file(str(model_dir / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before), "training changed nothing"

    cfg = load_config(out / "config.yaml")  # the resolved config reloads to the same run
    assert cfg.max_steps == 3 and cfg.prompt_weight == 0.1 and cfg.output_dir == str(out)
    metrics = read_metrics(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert set(metrics[0]) == set(StepMetrics.__dataclass_fields__)
    for m in metrics:
        assert m["loss"] > 0 and m["prompt_nll"] > 0 and m["response_nll"] > 0 and 0 < m["response_share"] <= 1
        assert m["tokens_per_s"] > 0
    assert [m["samples"] for m in metrics] == [4, 4, 2]  # 10 rows: the last, incomplete global batch is kept
    assert (out / "checkpoints" / "step-2").is_dir()

    # Resume from step 2 with a longer run: continues at step 3 and logs each step once.
    assert main(_sets(setup_dir, out, max_steps=5) + ["--resume"]) == 0
    assert [m["step"] for m in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4, 5]


def test_bad_data_is_one_line_error(setup_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n{"instruction": 5}\n')
    assert main(_sets(setup_dir, tmp_path / "o", data=bad)) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "Traceback" not in err


def test_lora_merged_with_checkpointing(setup_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = load_config(
        overrides=dict(
            model=str(setup_dir / "model"),
            data=str(setup_dir / "chat.jsonl"),
            max_steps=2,
            per_device_batch_size=2,
            lora_r=4,
            learning_rate=1e-2,
            gradient_checkpointing=True,
            output_dir=str(tmp_path / "lora"),
            progress=False,
        )
    )
    result = train(cfg)
    merged = load_file(str(result.model_dir / "model.safetensors"))
    assert not any("lora" in k for k in merged)
    base = load_file(str(setup_dir / "model" / "model.safetensors"))
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    assert changed and all(k.endswith("proj.weight") for k in changed)  # only adapted linear layers moved
    AutoModelForCausalLM.from_pretrained(result.model_dir)


def test_lora_adapter_only(setup_dir, tmp_path):
    cfg = load_config(
        overrides=dict(
            model=str(setup_dir / "model"),
            data=str(setup_dir / "chat.jsonl"),
            max_steps=1,
            per_device_batch_size=2,
            lora_r=4,
            merge_lora=False,
            output_dir=str(tmp_path / "adapter"),
            progress=False,
        )
    )
    result = train(cfg)
    assert (result.model_dir / "adapter_config.json").is_file()
    assert "LoRA adapter" in (result.model_dir / "README_witune.md").read_text()


def test_packing_gives_the_same_first_step_loss(setup_dir, tmp_path):
    """One step over all 10 samples: packed rows (position ids, block-diagonal attention) and padded rows
    must give the same loss before any update, since attention never crosses samples."""
    losses = {}
    for pack in (False, True):
        cfg = load_config(
            overrides=dict(
                model=str(setup_dir / "model"),
                data=str(setup_dir / "chat.jsonl"),
                max_steps=1,
                per_device_batch_size=10,
                pack=pack,
                max_length=128,
                prompt_weight=0.1,
                output_dir=str(tmp_path / f"p{pack}"),
                progress=False,
            )
        )
        result = train(cfg)
        losses[pack] = result.final_loss
        samples = read_metrics(result.metrics_path)[0]["samples"]  # rows in the step: packed rows hold several
        assert samples == 10 if not pack else 1 <= samples < 10
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_bf16_runs(setup_dir, tmp_path):
    cfg = load_config(
        overrides=dict(
            model=str(setup_dir / "model"),
            data=str(setup_dir / "chat.jsonl"),
            max_steps=1,
            per_device_batch_size=2,
            precision="bf16",
            output_dir=str(tmp_path / "bf16"),
            progress=False,
        )
    )
    assert torch.isfinite(torch.tensor(train(cfg).final_loss))


def test_a_run_without_deepspeed_prints_no_deepspeed_warning(setup_dir, tmp_path):
    """Issue 38: every `witune train` (and `witune demo`) printed DeepSpeed's "Setting accelerator to CPU" warning,
    since saving the model imported DeepSpeed (installed, never asked for) through accelerate."""
    import os
    import subprocess
    import sys

    pytest.importorskip("deepspeed")  # without it installed there is nothing to warn
    argv = [str(a) for a in _sets(setup_dir, tmp_path / "run", max_steps=1, save_every=1, lora_r=4)]
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    done = subprocess.run(
        [sys.executable, "-m", "witune.cli.main", *argv], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "model").is_dir()
    assert "Setting accelerator" not in done.stdout + done.stderr, done.stderr
