"""The step normaliser makes one optimizer step independent of how it is split into micro-batches and processes.

Measured tolerances (fp32, CPU, SGD, one step over 8 samples of 5 to ~120 tokens, weights 0.3 / 1.0):
loss agrees to < 1e-6 relative, and every parameter to < 1e-4 of that tensor's largest update (we saw ~1e-5;
the update itself is ~1e-2). A per-micro-batch mean (the HF gradient-accumulation bug) is off by > 1%.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from witune.models.tiny import make_tiny_model
from witune.train import load_config, train
from witune.train.batches import Schedule

LOSS_RTOL = 1e-6
PARAM_TOL = 1e-4  # max |difference| / max |update|, per tensor
LR = 1.0
WORDS = "the cat likes a long letter today every morning with care and reads simple code quickly".split()


def _text(n: int, shift: int) -> str:
    return " ".join(WORDS[(shift + k) % len(WORDS)] for k in range(n))


@pytest.fixture(scope="module")
def setup_dir(tmp_path_factory) -> Path:
    """Tiny Llama + 8 prompt/completion samples whose lengths differ by 20x, ordered so that the micro-batches
    of the 2 x 4 split have very different token counts."""
    root = tmp_path_factory.mktemp("inv")
    make_tiny_model(root / "model")
    prompt_words = [2, 60, 3, 45, 1, 80, 5, 30]
    completion_words = [40, 1, 25, 2, 3, 30, 1, 8]
    with open(root / "data.jsonl", "w") as f:
        for i, (p, c) in enumerate(zip(prompt_words, completion_words)):
            f.write(json.dumps({"prompt": _text(p, i), "completion": " " + _text(c, 3 * i)}) + "\n")
    return root


def _overrides(root: Path, out: Path, norm: str, **kw) -> dict:
    base = dict(
        model=str(root / "model"),
        data=str(root / "data.jsonl"),
        template="plain",
        prompt_weight=0.3,
        response_weight=1.0,
        normalization=norm,
        optimizer="sgd",
        learning_rate=LR,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        max_grad_norm=0.0,
        max_steps=1,
        seed=3,
        progress=False,
        output_dir=str(out),
    )
    base.update(kw)
    return base


def _run(root: Path, tmp: Path, norm: str, bs: int, acc: int) -> tuple[float, dict[str, torch.Tensor]]:
    out = tmp / f"{norm}-b{bs}-a{acc}"
    result = train(load_config(overrides=_overrides(root, out, norm, per_device_batch_size=bs, grad_accum=acc)))
    return result.final_loss, load_file(str(result.model_dir / "model.safetensors"))


def _assert_same_step(root: Path, a: tuple[float, dict], b: tuple[float, dict]) -> None:
    (loss_a, pa), (loss_b, pb) = a, b
    assert loss_a == pytest.approx(loss_b, rel=LOSS_RTOL)
    init = load_file(str(root / "model" / "model.safetensors"))
    for k in pb:
        update = (pb[k] - init[k]).abs().max()
        assert update > 0, f"{k} did not change: the test would prove nothing"
        assert (pa[k] - pb[k]).abs().max() <= PARAM_TOL * update, k


def test_data_lengths_differ(setup_dir):
    from witune.data import RoleWeights, load_examples, tokenize_examples
    from witune.train.setup import load_tokenizer

    cfg = load_config(overrides=_overrides(setup_dir, setup_dir / "x", "nonzero"))
    rows = tokenize_examples(
        load_examples(cfg.data).examples, load_tokenizer(cfg), RoleWeights(0.3, 1.0), template="plain"
    ).rows
    lengths = [len(r) for r in rows]
    assert len(rows) == 8 and min(lengths) <= 8 and max(lengths) >= 80, lengths


def test_schedule_same_samples_for_every_split():
    for n in (8, 13):
        ref = Schedule(n, 8, 1, 1, seed=5)
        for bs, acc, world in [(2, 4, 1), (2, 2, 2), (1, 2, 4), (4, 1, 2)]:
            s = Schedule(n, bs, acc, world, seed=5)
            assert s.steps_per_epoch == ref.steps_per_epoch
            for step in range(s.steps_per_epoch * 2):
                e, i = s.locate(step)
                parts = [ix for r in range(world) for mb in s.micro_batches(e, i, r) for ix in mb]
                assert sorted(parts) == sorted(ref.step_indices(e, i))
                assert len(parts) == len(set(parts))
    assert Schedule(13, 8, 1, 1, seed=5, drop_last=True).steps_per_epoch == 1


@pytest.mark.parametrize("norm", ["nonzero", "weight_sum"])
def test_accumulation_invariance(setup_dir, tmp_path, norm):
    full = _run(setup_dir, tmp_path, norm, bs=8, acc=1)
    split = _run(setup_dir, tmp_path, norm, bs=2, acc=4)
    _assert_same_step(setup_dir, split, full)


def test_chunked_loss_takes_the_same_step(setup_dir, tmp_path):
    """The loss from hidden states in chunks (no logits tensor) takes the same step as the loss from logits."""
    out = tmp_path / "chunked"
    cfg = load_config(
        overrides=_overrides(setup_dir, out, "nonzero", per_device_batch_size=2, grad_accum=4, chunked_loss=True)
    )
    result = train(cfg)
    chunked = (result.final_loss, load_file(str(result.model_dir / "model.safetensors")))
    _assert_same_step(setup_dir, chunked, _run(setup_dir, tmp_path, "nonzero", 8, 1))


def test_naive_micro_batch_mean_differs(setup_dir):
    """The bug class this engine rules out: averaging per-micro-batch means gives a different gradient here."""
    from transformers import AutoModelForCausalLM

    from witune.data import RoleWeights, load_examples, pad_collate, tokenize_examples
    from witune.loss import weighted_nll
    from witune.train.setup import load_tokenizer

    cfg = load_config(overrides=_overrides(setup_dir, setup_dir / "x", "nonzero"))
    tok = load_tokenizer(cfg)
    rows = tokenize_examples(load_examples(cfg.data).examples, tok, RoleWeights(0.3, 1.0), template="plain").rows
    order = Schedule(8, 8, 1, 1, seed=cfg.seed).step_indices(0, 0)
    model = AutoModelForCausalLM.from_pretrained(str(setup_dir / "model"), dtype=torch.float32)

    def grad(micro: list[list[int]], naive: bool) -> torch.Tensor:
        model.zero_grad()
        z = sum(pad_collate([rows[i] for i in mb], tok.pad_token_id)["weights"].ne(0).sum() for mb in micro)
        losses = []
        for mb in micro:
            b = pad_collate([rows[i] for i in mb], tok.pad_token_id)
            s = weighted_nll(
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"], b["weights"]
            )
            loss = s.loss("nonzero") / len(micro) if naive else s.weighted_sum / z
            loss.backward()
            losses.append(loss.item())
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    whole = grad([order], naive=False)
    quarters = [order[i : i + 2] for i in range(0, 8, 2)]
    ours, naive = grad(quarters, naive=False), grad(quarters, naive=True)
    assert torch.allclose(ours, whole, rtol=1e-4, atol=1e-7)
    assert (naive - whole).norm() > 0.01 * whole.norm()


_DDP_SCRIPT = """
import json, sys
from witune.train import load_config, train
from accelerate.state import PartialState
spec = json.loads(sys.argv[1])
for norm, overrides in spec.items():
    r = train(load_config(overrides=overrides))
    if PartialState().is_main_process:
        print("RESULT", norm, r.final_loss, r.model_dir, flush=True)
"""


@pytest.mark.slow
def test_two_process_invariance(setup_dir, tmp_path):
    """2 processes (torchrun, gloo) x batch 2 x accumulation 2 == batch 8 x accumulation 1, for both normalisers."""
    norms = ["nonzero", "weight_sum"]
    spec = {n: _overrides(setup_dir, tmp_path / f"ddp-{n}", n, per_device_batch_size=2, grad_accum=2) for n in norms}
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        json.dumps(spec),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {
        ln.split()[1]: (float(ln.split()[2]), Path(ln.split()[3]))
        for ln in proc.stdout.splitlines()
        if ln.startswith("RESULT")
    }
    assert sorted(results) == norms
    for norm in norms:
        loss, model_dir = results[norm]
        ddp = (loss, load_file(str(model_dir / "model.safetensors")))
        _assert_same_step(setup_dir, ddp, _run(setup_dir, tmp_path, norm, bs=8, acc=1))
        metrics = [json.loads(ln) for ln in (model_dir.parent / "metrics.jsonl").read_text().splitlines()]
        assert len(metrics) == 1 and metrics[0]["samples"] == 8  # one log line: only the main process writes
