"""Dynamic token weights (witune.loss.dynamic): DFT and the interface, in the logits and hidden-state losses,
in `witune train` (invariance over how a step is split) and in `score`.

References are plain autograd in float64 on the same tensors (f detached, as the definition says). Tolerance:
1e-6 relative for losses and gradients (the chunked float32 paths agree to ~1e-7 here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from shared import shared_file
from test_train_invariance import _assert_same_step, _overrides, setup_dir  # noqa: F401  (setup_dir: a fixture)

from witune.loss import (
    DFT,
    DYNAMIC_WEIGHTS,
    DynamicWeight,
    TokenStats,
    dynamic_weight,
    register_dynamic_weight,
    weighted_nll,
    weighted_nll_from_hidden,
)
from witune.train import load_config, train

RTOL = 1e-6


def _batch(seed: int = 0, n: int = 64, hidden: int = 24, vocab: int = 211):
    """Hidden states, a head, labels with ignored rows, and WIT weights (0 prompt rows, 0.3 and 1.0)."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, hidden, generator=g, dtype=torch.float64) * 0.5
    head = torch.randn(vocab, hidden, generator=g, dtype=torch.float64) * 0.5
    labels = torch.randint(0, vocab, (n,), generator=g)
    labels[:6] = -100
    weights = torch.where(torch.arange(n) % 3 == 0, 0.3, 1.0).double()
    weights[6:12] = 0.0
    return h, head, labels, weights


def _reference(h, head, labels, weights, factor, eps: float = 0.0) -> torch.Tensor:
    """sum_t w_t f_t ((1 - eps) nll_t + eps mean_v(-log p_v)), f from `factor(nll, entropy)` and detached."""
    logp = torch.log_softmax(h @ head.T, dim=-1)
    valid = labels != -100
    nll = -logp.gather(1, labels.clamp_min(0)[:, None]).squeeze(1)
    entropy = -(logp.exp() * logp).sum(-1)
    f = factor(nll.detach(), entropy.detach())
    row = (1 - eps) * nll + eps * (-logp.mean(-1))
    return torch.where(valid, weights * f * row, 0.0).sum()


def _ours(path: str, h, head, labels, weights, rule, side=None, eps: float = 0.0) -> torch.Tensor:
    if path == "logits":
        return weighted_nll(h @ head.T, labels, weights, dynamic=rule, side=side, label_smoothing=eps).weighted_sum
    return weighted_nll_from_hidden(h, head, labels, weights, dynamic=rule, side=side, chunk_size=16).weighted_sum


def _assert_close_with_grads(ours_fn, ref_fn, h, head) -> None:
    h32, head32 = (t.float().requires_grad_() for t in (h, head))
    h64, head64 = (t.clone().requires_grad_() for t in (h, head))
    ours, ref = ours_fn(h32, head32), ref_fn(h64, head64)
    got, want = torch.autograd.grad(ours, (h32, head32)), torch.autograd.grad(ref, (h64, head64))
    assert float(ours) == pytest.approx(float(ref), rel=RTOL)
    for a, b in zip(got, want):
        assert float((a.double() - b).norm() / b.norm()) < RTOL


@pytest.mark.parametrize("path", ["logits", "hidden"])
def test_dft_is_the_detached_probability_times_the_weighted_nll(path):
    h, head, labels, weights = _batch()
    _assert_close_with_grads(
        lambda a, b: _ours(path, a, b, labels, weights.float(), DFT()),
        lambda a, b: _reference(a, b, labels, weights, lambda nll, _: torch.exp(-nll)),
        h,
        head,
    )
    # and it changes the loss: DFT is not the static weighted sum
    plain = _ours(path, h.float(), head.float(), labels, weights.float(), None)
    assert float(_ours(path, h.float(), head.float(), labels, weights.float(), DFT())) < 0.9 * float(plain)


class _One(DynamicWeight):
    name = "one"

    def factor(self, stats: TokenStats) -> torch.Tensor:
        return torch.ones_like(stats.nll)


@pytest.mark.parametrize("path", ["logits", "hidden"])
def test_dynamic_off_changes_nothing(path):
    """No rule and a rule of factor 1 give the same sums and gradients, bit for bit: the plumbing adds nothing."""
    h, head, labels, weights = (t.float() if t.is_floating_point() else t for t in _batch(1))
    results = []
    for rule in (None, _One()):
        hh, ww = h.clone().requires_grad_(), head.clone().requires_grad_()
        if path == "logits":
            sums = weighted_nll(hh @ ww.T, labels, weights, dynamic=rule)
        else:
            sums = weighted_nll_from_hidden(hh, ww, labels, weights, dynamic=rule, chunk_size=16)
        results.append((sums.detached(), torch.autograd.grad(sums.weighted_sum, (hh, ww))))
    (a, ga), (b, gb) = results
    # (the hidden path's response_nll is NaN here: skipped zero-weight rows have no nll)
    assert all(torch.allclose(getattr(a, k), getattr(b, k), rtol=0, atol=0, equal_nan=True) for k in vars(a))
    assert all(torch.equal(x, y) for x, y in zip(ga, gb))


class _Confident(DynamicWeight):
    """A test rule from the entropy: f = exp(-H), so spread-out predictions count less."""

    name = "confident"
    needs_entropy = True

    def factor(self, stats: TokenStats) -> torch.Tensor:
        assert stats.entropy is not None
        return torch.exp(-stats.entropy)


class _ExcessLoss(DynamicWeight):
    """A Rho-1-style test rule: train a token only where the model's loss exceeds a reference's (side input)."""

    name = "excess"

    def __init__(self, reference_nll: torch.Tensor | None = None):
        self.reference_nll = reference_nll

    def factor(self, stats: TokenStats) -> torch.Tensor:
        assert stats.side is not None
        return (stats.nll - stats.side > 0).float()

    def side_input(self, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor | None:
        return self.reference_nll


@pytest.mark.parametrize("path", ["logits", "hidden"])
def test_the_interface_takes_entropy_and_reference_rules(path):
    """Two rules that are not DFT go through the same loss, unchanged: one reads the entropy, one a side input."""
    h, head, labels, weights = _batch(2)
    _assert_close_with_grads(
        lambda a, b: _ours(path, a, b, labels, weights.float(), _Confident()),
        lambda a, b: _reference(a, b, labels, weights, lambda _, ent: torch.exp(-ent)),
        h,
        head,
    )
    reference = torch.full((len(labels),), 5.4, dtype=torch.float64)  # about the median nll of this batch
    _assert_close_with_grads(
        lambda a, b: _ours(path, a, b, labels, weights.float(), _ExcessLoss(), side=reference.float()),
        lambda a, b: _reference(a, b, labels, weights, lambda nll, _: (nll - reference > 0).double()),
        h,
        head,
    )
    kept = _ours(path, h.float(), head.float(), labels, weights.float(), _ExcessLoss(), side=reference.float())
    assert 0 < float(kept) < float(_ours(path, h.float(), head.float(), labels, weights.float(), None))


def test_label_smoothing_equals_transformers_label_smoother_and_composes_with_weights():
    from transformers.trainer_pt_utils import LabelSmoother

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 9, 50, generator=g)
    labels = torch.randint(0, 50, (2, 9), generator=g)
    labels[0, :4] = -100
    want = LabelSmoother(epsilon=0.1)({"logits": logits}, labels, shift_labels=True)
    ones = (labels != -100).float()
    sums = weighted_nll(logits[:, :-1], labels[:, 1:], ones[:, 1:], label_smoothing=0.1)
    assert float(sums.loss("nonzero")) == pytest.approx(float(want), rel=RTOL)
    plain = weighted_nll(logits[:, :-1], labels[:, 1:], ones[:, 1:])
    assert torch.equal(sums.response_nll, plain.response_nll)  # the diagnostics stay the plain nll
    assert not torch.equal(sums.weighted_sum, plain.weighted_sum)
    h, head, y, w = _batch(4)
    _assert_close_with_grads(
        lambda a, b: _ours("logits", a, b, y, w.float(), None, eps=0.2),
        lambda a, b: _reference(a, b, y, w, lambda nll, _: torch.ones_like(nll), eps=0.2),
        h,
        head,
    )


def test_rules_are_checked_and_named():
    assert dynamic_weight(None) is None and dynamic_weight("none") is None
    assert isinstance(dynamic_weight("dft"), DFT)
    with pytest.raises(ValueError, match=r"dynamic weight must be 'none' or one of \['dft'"):
        dynamic_weight("dtf")

    class Negative(_One):
        name = "negative"

        def factor(self, stats):
            return -torch.ones_like(stats.nll)

    h, head, labels, weights = (t.float() if t.is_floating_point() else t for t in _batch(5))
    for path in ("logits", "hidden"):
        with pytest.raises(ValueError, match="'negative' returned a negative or non-finite factor"):
            _ours(path, h, head, labels, weights, Negative())
    with pytest.raises(ValueError, match="fused 'liger' kernel"):
        weighted_nll_from_hidden(h, head, labels, weights, dynamic=DFT(), backend="liger")
    try:
        register_dynamic_weight(_Confident)
        assert isinstance(dynamic_weight("confident"), _Confident)
    finally:
        DYNAMIC_WEIGHTS.pop("confident")


def test_train_config_dynamic_weight(tmp_path):
    from witune.errors import ConfigError

    base = dict(data="x.jsonl", output_dir=str(tmp_path))
    assert load_config(overrides={**base, "dynamic_weight": "dft"}).dynamic_weight == "dft"
    with pytest.raises(ConfigError, match="config key 'dynamic_weight' must be one of"):
        load_config(overrides={**base, "dynamic_weight": "dtf"})
    with pytest.raises(ConfigError, match="loss_backend 'cce' does not give"):
        load_config(overrides={**base, "dynamic_weight": "dft", "chunked_loss": True, "loss_backend": "cce"})


# The random tiny model gives each label p ~ 1e-3, so DFT scales the gradient by ~1e-3: a learning rate 1000x the
# invariance tests' keeps the update (~1e-2) far above float32 rounding of the parameters, as theirs is.
DFT_LR = 1000.0


def _dft_run(root: Path, out: Path, **kw) -> tuple[float, dict[str, torch.Tensor]]:
    kw = {"learning_rate": DFT_LR, **kw}
    result = train(load_config(overrides=_overrides(root, out, "nonzero", dynamic_weight="dft", **kw)))
    return result.final_loss, load_file(str(result.model_dir / "model.safetensors"))


def test_dft_step_is_the_same_however_the_step_is_split(setup_dir, tmp_path):  # noqa: F811  (the fixture)
    """With DFT on: batch 8 x 1 == batch 2 x 4 == packed == chunked loss from hidden states; and DFT changes it."""
    full = _dft_run(setup_dir, tmp_path / "full", per_device_batch_size=8, grad_accum=1)
    _assert_same_step(setup_dir, _dft_run(setup_dir, tmp_path / "split", per_device_batch_size=2, grad_accum=4), full)
    packed = _dft_run(setup_dir, tmp_path / "packed", per_device_batch_size=2, grad_accum=2, pack=True)
    _assert_same_step(setup_dir, packed, full)
    chunked = _dft_run(setup_dir, tmp_path / "chunk", per_device_batch_size=2, grad_accum=4, chunked_loss=True)
    _assert_same_step(setup_dir, chunked, full)
    plain = train(load_config(overrides=_overrides(setup_dir, tmp_path / "plain", "nonzero", per_device_batch_size=8)))
    assert plain.final_loss > 1.5 * full[0]  # DFT down-weights: the loss is not the plain one


_DDP_SCRIPT = """
import json, sys
from witune.train import load_config, train
from accelerate.state import PartialState
r = train(load_config(overrides=json.loads(sys.argv[1])))
if PartialState().is_main_process:
    print("RESULT", r.final_loss, r.model_dir, flush=True)
"""


@pytest.mark.slow
def test_dft_two_process_invariance(setup_dir, tmp_path):  # noqa: F811  (the fixture)
    """2 processes (torchrun, gloo) x batch 2 x accumulation 2 with DFT == batch 8 x accumulation 1 with DFT."""
    overrides = _overrides(
        setup_dir,
        tmp_path / "ddp",
        "nonzero",
        per_device_batch_size=2,
        grad_accum=2,
        dynamic_weight="dft",
        learning_rate=DFT_LR,
    )
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*cmd, json.dumps(overrides)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    ddp = (float(line.split()[1]), load_file(str(Path(line.split()[2]) / "model.safetensors")))
    _assert_same_step(setup_dir, ddp, _dft_run(setup_dir, tmp_path / "one", per_device_batch_size=8))


def test_score_with_dft(tiny_model_dir, tiny_tokenizer):
    """`score` with DFT: the same weighted sum as the loss on the whole batch, the per-role NLL unchanged."""
    from witune.data import Location, RoleWeights, pad_collate, to_examples, tokenize_examples
    from witune.eval.score import score
    from witune.models import load_model

    records = [{"prompt": f"say {w} twice", "completion": f" {w} {w}"} for w in ("cat", "letter", "morning")]
    examples = [e for i, r in enumerate(records) for e in to_examples(r, "prompt_completion", Location("t", i))]
    rows = tokenize_examples(examples, tiny_tokenizer, RoleWeights(0.3, 1.0), template="plain").rows
    model, pad = load_model(tiny_model_dir), tiny_tokenizer.pad_token_id
    plain, dft = score(model, rows, pad, progress=False), score(model, rows, pad, progress=False, dynamic=DFT())
    batch = pad_collate(rows, pad)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    want = weighted_nll(logits, batch["labels"], batch["weights"], dynamic=DFT()).weighted_sum
    assert dft.weighted_sum == pytest.approx(float(want), rel=1e-5) and dft.dynamic_weight == "dft"
    assert dft.weighted_sum < plain.weighted_sum and dft.normalizer == plain.normalizer
    assert dft.response_nll == pytest.approx(plain.response_nll)


def test_score_cli_dynamic_weight(tiny_model_dir, tmp_path, capsys):
    """`witune score --dynamic-weight dft` reports the DFT loss; an unknown rule is one line, exit status 2."""
    from witune.cli.main import main

    data = shared_file("alpaca_seed_tasks.jsonl")
    args = ["score", str(data), "--model", str(tiny_model_dir), "--limit", "4", "--prompt-weight", "0.1"]
    results = {}
    for rule in ("none", "dft"):
        out = tmp_path / f"{rule}.json"
        assert main([*args, "--dynamic-weight", rule, "--json", str(out)]) == 0
        results[rule] = json.loads(out.read_text())
    assert results["dft"]["dynamic_weight"] == "dft" and results["none"]["dynamic_weight"] == "none"
    assert results["dft"]["loss"] < results["none"]["loss"]
    assert results["dft"]["normalizer"] == results["none"]["normalizer"]
    capsys.readouterr()
    assert main([*args, "--dynamic-weight", "dtf"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dynamic weight must be 'none' or one of ['dft'], got 'dtf'" in err[0]
