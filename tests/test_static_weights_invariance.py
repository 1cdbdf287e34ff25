"""One optimizer step with per-message, per-sample and span weights all on (and DFT's dynamic weight on top) is
the same for batch 8 x accumulation 1, batch 2 x accumulation 4, packed rows, and 2 processes (gloo): the static
weights live in the rows, the dynamic one is a per-token factor, and the step normaliser counts them over the
whole step (tolerances of tests/test_train_invariance.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_loss_dynamic import DFT_LR
from test_train_invariance import WORDS, _assert_same_step, _overrides

from witune.models.tiny import make_tiny_model
from witune.train import load_config, train

STATIC = {"span_weights": {"think": 0.4}, "role_weights": {"system": 0.0}, "template": "chat", "prompt_weight": 0.3}
# DFT on top of every static weight (its learning rate: see test_loss_dynamic.DFT_LR)
DYNAMIC = {"none": {}, "dft": {"dynamic_weight": "dft", "learning_rate": DFT_LR}}


def _text(n: int, shift: int) -> str:
    return " ".join(WORDS[(shift + k) % len(WORDS)] for k in range(n))


@pytest.fixture(scope="module")
def weighted_dir(tmp_path_factory) -> Path:
    """Tiny Llama + 8 chats of very different lengths, each with message weights, a sample weight and a
    <think> span in the answer."""
    root = tmp_path_factory.mktemp("static-inv")
    make_tiny_model(root / "model")
    prompt_words, answer_words = [2, 40, 3, 30, 1, 50, 5, 20], [30, 1, 20, 2, 3, 25, 1, 8]
    with open(root / "data.jsonl", "w") as f:
        for i, (p, a) in enumerate(zip(prompt_words, answer_words)):
            messages = [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": _text(p, i), "weight": 0.5 + i % 3},
                {"role": "assistant", "content": f"<think>{_text(a, i)}</think> {_text(1 + a // 3, 2 * i)}",
                 "loss_weight": (1.0, 0.25, 2.0)[i % 3]},
            ]  # fmt: skip
            f.write(json.dumps({"messages": messages, "sample_weight": (1.0, 0.5, 1.5, 3.0)[i % 4]}) + "\n")
    return root


def _step(root: Path, out: Path, norm: str, **kw) -> tuple[float, dict]:
    cfg = load_config(overrides={**_overrides(root, out, norm, **STATIC), **kw})
    result = train(cfg)
    return result.final_loss, load_file(str(result.model_dir / "model.safetensors"))


def test_the_weights_are_really_on(weighted_dir):
    from witune.data import load_examples, tokenize_examples
    from witune.train.setup import load_tokenizer

    cfg = load_config(overrides=_overrides(weighted_dir, weighted_dir / "x", "nonzero", **STATIC))
    data = tokenize_examples(
        load_examples(cfg.data).examples, load_tokenizer(cfg), cfg.role_weights_obj(), template="chat"
    )
    assert data.span_counts == {"think": 8}
    distinct = {round(w, 6) for r in data.rows for w in r.weights}
    assert len(distinct) >= 8  # roles x message x span x sample weights give many different token weights


@pytest.mark.parametrize("norm,dynamic", [("nonzero", "none"), ("weight_sum", "none"), ("nonzero", "dft")])
def test_static_weights_take_the_same_step_split_and_packed(weighted_dir, tmp_path, norm, dynamic):
    kw = DYNAMIC[dynamic]
    full = _step(weighted_dir, tmp_path / "full", norm, per_device_batch_size=8, grad_accum=1, **kw)
    split = _step(weighted_dir, tmp_path / "split", norm, per_device_batch_size=2, grad_accum=4, **kw)
    _assert_same_step(weighted_dir, split, full)
    packed = _step(weighted_dir, tmp_path / "packed", norm, per_device_batch_size=2, grad_accum=1, pack=True, **kw)
    _assert_same_step(weighted_dir, packed, full)


@pytest.mark.slow
def test_static_weights_two_process_invariance(weighted_dir, tmp_path):
    """2 processes x batch 2 x accumulation 2 == 1 process x batch 8, static weights and DFT all on."""
    from launch_train import TORCHRUN, launch

    kw = {**STATIC, **DYNAMIC["dft"], "per_device_batch_size": 2, "grad_accum": 2}
    results = launch(
        TORCHRUN, [{"tag": "ddp", "overrides": _overrides(weighted_dir, tmp_path / "ddp", "nonzero", **kw)}]
    )
    loss, model_dir = results["ddp"]
    ddp = (loss, load_file(str(model_dir / "model.safetensors")))
    one = _step(weighted_dir, tmp_path / "one", "nonzero", per_device_batch_size=8, **DYNAMIC["dft"])
    _assert_same_step(weighted_dir, ddp, one)
