"""The step normaliser makes one optimizer step independent of how it is split into micro-batches and processes.

Measured tolerances (fp32, CPU, SGD, one step over 8 samples of 5 to ~120 tokens, weights 0.3 / 1.0):
loss agrees to < 1e-6 relative, and every parameter to < 1e-4 of that tensor's largest update (we saw ~1e-5;
the update itself is ~1e-2). A per-micro-batch mean (the HF gradient-accumulation bug) is off by > 1% (we saw
>= 9% of every tensor's largest gradient entry, 12-39% of its norm).

bf16 (`precision: bf16`: autocast over fp32 master weights), tolerances derived from bf16's unit roundoff
u = 2^-8 (8 significant bits):
* Parameters: under autocast each backward matmul rounds its fp32-accumulated result to bf16 (relative error
  <= u) before it is added to the fp32 gradient. Batch 8 rounds the step's gradient once; a split into P
  partial gradients (micro-batches x processes, P = 4 here) rounds each partial once and adds them in fp32.
  The two differ by at most (P + 1) u of the gradient's magnitude, so with SGD at lr 1 every parameter agrees
  to (P + 1) u = 5 * 2^-8 = 1.95% of that tensor's largest update (we saw 0.47%). The naive per-micro-batch mean
  is off by >= 9%, so the bound still separates a right step from the bug.
* Loss: each token's nll is computed in fp32 from the bf16 logits and summed in fp32 (`witune.loss`). A split
  can only change a logit's rounding (to the neighbouring bf16 value) where its fp32 accumulation order
  differs; such flips are rare and of both signs, so the step's mean moves far less than one rounding of
  itself: the loss agrees to u relative (we saw 8.5e-7).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from witune.models.tiny import make_tiny_model
from witune.train import load_config, train
from witune.train.batches import Schedule
from witune.train.metrics import read_metrics

LOSS_RTOL = 1e-6
PARAM_TOL = 1e-4  # max |difference| / max |update|, per tensor
BF16_U = 2.0**-8  # bf16 unit roundoff
BF16_PARTIALS = 4  # partial gradients of the split steps: 4 micro-batches, or 2 processes x 2
BF16_LOSS_RTOL = BF16_U
BF16_PARAM_TOL = (BF16_PARTIALS + 1) * BF16_U
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


def _run(
    root: Path, tmp: Path, norm: str, bs: int, acc: int, weights_file: str = "model.safetensors", **kw
) -> tuple[float, dict[str, torch.Tensor]]:
    out = tmp / f"{norm}-b{bs}-a{acc}-{'-'.join(f'{k}{v}' for k, v in kw.items())}"
    result = train(load_config(overrides=_overrides(root, out, norm, per_device_batch_size=bs, grad_accum=acc, **kw)))
    return result.final_loss, load_file(str(result.model_dir / weights_file))


def _assert_same_step(
    root: Path,
    a: tuple[float, dict],
    b: tuple[float, dict],
    loss_rtol: float = LOSS_RTOL,
    param_tol: float = PARAM_TOL,
    init: dict[str, torch.Tensor] | None = None,
) -> None:
    """Same loss and, per tensor, parameters within `param_tol` of the step's largest update of that tensor
    (updates from `init`, default the tiny model's weights). Returns nothing; fails naming the tensor."""
    (loss_a, pa), (loss_b, pb) = a, b
    assert loss_a == pytest.approx(loss_b, rel=loss_rtol)
    init = init if init is not None else load_file(str(root / "model" / "model.safetensors"))
    for k in pb:
        update = (pb[k].float() - init[k].float()).abs().max()
        assert update > 0, f"{k} did not change: the test would prove nothing"
        assert (pa[k].float() - pb[k].float()).abs().max() <= param_tol * update, k


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


def test_bf16_accumulation_invariance(setup_dir, tmp_path):
    """precision: bf16 takes the same step for batch 8 x 1 and 2 x 4 (bf16 tolerances above), and really runs in
    bf16: its step differs from the fp32 one by far more than two fp32 splits differ from each other."""
    full = _run(setup_dir, tmp_path, "nonzero", 8, 1, precision="bf16")
    split = _run(setup_dir, tmp_path, "nonzero", 2, 4, precision="bf16")
    _assert_same_step(setup_dir, split, full, BF16_LOSS_RTOL, BF16_PARAM_TOL)
    fp32 = _run(setup_dir, tmp_path, "nonzero", 8, 1)
    init = load_file(str(setup_dir / "model" / "model.safetensors"))
    worst = max(float((full[1][k] - fp32[1][k]).abs().max() / (fp32[1][k] - init[k]).abs().max()) for k in init)
    assert worst > 10 * PARAM_TOL, worst  # we saw 0.8% of the update


def test_bf16_weights_lora_invariance(setup_dir, tmp_path):
    """precision: bf16_weights (LoRA): the base weights are stored in bf16, the adapters in fp32, and the adapter
    step is the same for batch 8 x 1 and 2 x 4 within the bf16 tolerances. LoRA's B starts at 0 and A gets no
    gradient in the first step, so the step is B's (A must stay exactly as initialised)."""
    lora = dict(precision="bf16_weights", lora_r=4, lora_alpha=8, lora_dropout=0.0)
    adapter = "adapter_model.safetensors"
    full = _run(setup_dir, tmp_path, "nonzero", 8, 1, adapter, merge_lora=False, **lora)
    split = _run(setup_dir, tmp_path, "nonzero", 2, 4, adapter, merge_lora=False, **lora)
    assert all(t.dtype == torch.float32 for t in full[1].values())
    b_only = {k: v for k, v in full[1].items() if "lora_B" in k}
    a_only = {k: v for k, v in full[1].items() if "lora_A" in k}
    assert b_only and all(torch.equal(split[1][k], v) for k, v in a_only.items())
    zeros = {k: torch.zeros_like(v) for k, v in b_only.items()}
    _assert_same_step(setup_dir, (split[0], split[1]), (full[0], b_only), BF16_LOSS_RTOL, BF16_PARAM_TOL, zeros)
    merged = _run(setup_dir, tmp_path, "nonzero", 8, 1, **lora)[1]
    assert {t.dtype for t in merged.values()} == {torch.bfloat16}  # the model was held in bf16 throughout


def test_bf16_weights_needs_lora():
    from witune.errors import ConfigError

    with pytest.raises(ConfigError, match="lora_r > 0"):
        load_config(overrides={"data": "x.jsonl", "precision": "bf16_weights"})


def test_bf16_loss_is_summed_in_fp32(setup_dir):
    """Under bf16 autocast the model's logits are bf16; the loss sums are fp32 and equal the float64 sum of the
    same logits within fp32 accumulation error (n * 2^-24 of the sum of |terms|, n terms)."""
    from transformers import AutoModelForCausalLM

    from witune.loss import weighted_nll

    model = AutoModelForCausalLM.from_pretrained(str(setup_dir / "model"), dtype=torch.float32)
    ids = torch.randint(0, model.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    labels, weights = ids[:, 1:], torch.where(torch.arange(39) < 10, 0.3, 1.0).expand(2, 39)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids[:, :-1]).logits
    assert logits.dtype == torch.bfloat16
    sums = weighted_nll(logits, labels, weights)
    assert sums.weighted_sum.dtype == torch.float32 and sums.response_nll.dtype == torch.float32
    nll = torch.nn.functional.cross_entropy(logits.double().flatten(0, 1), labels.flatten(), reduction="none")
    terms = nll * weights.flatten().double()
    bound = terms.numel() * 2.0**-24 * terms.abs().sum()
    assert abs(sums.weighted_sum.double() - terms.sum()) <= bound


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


@pytest.mark.slow
def test_two_process_invariance(setup_dir, tmp_path):
    """2 processes (torchrun, gloo) x batch 2 x accumulation 2 == batch 8 x accumulation 1, for both normalisers
    and for bf16. The bf16 run also logs to TensorBoard: one event file (main process only) whose loss is
    metrics.jsonl's."""
    from launch_train import TORCHRUN, launch
    from test_train_trackers import tensorboard_scalars

    # tag: (normaliser, precision, extra settings)
    cases = {
        "nonzero": ("nonzero", "fp32", {}),
        "weight_sum": ("weight_sum", "fp32", {}),
        "bf16": ("nonzero", "bf16", {"report_to": "tensorboard"}),
    }
    jobs = [
        {
            "tag": tag,
            "overrides": _overrides(
                setup_dir, tmp_path / f"ddp-{tag}", norm, per_device_batch_size=2, grad_accum=2, precision=prec, **kw
            ),
        }
        for tag, (norm, prec, kw) in cases.items()
    ]
    results = launch(TORCHRUN, jobs)
    assert sorted(results) == sorted(cases)
    for tag, (norm, prec, _) in cases.items():
        loss, model_dir = results[tag]
        ddp = (loss, load_file(str(model_dir / "model.safetensors")))
        reference = _run(setup_dir, tmp_path, norm, bs=8, acc=1, precision=prec)
        tolerances = (BF16_LOSS_RTOL, BF16_PARAM_TOL) if prec == "bf16" else (LOSS_RTOL, PARAM_TOL)
        _assert_same_step(setup_dir, ddp, reference, *tolerances)
        metrics = read_metrics(model_dir.parent / "metrics.jsonl")
        assert len(metrics) == 1 and metrics[0]["samples"] == 8  # one log line: only the main process writes
    events = list((tmp_path / "ddp-bf16" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1, events
    logged = read_metrics(tmp_path / "ddp-bf16" / "metrics.jsonl")
    assert tensorboard_scalars(tmp_path / "ddp-bf16" / "tensorboard")["train/loss"] == [
        (m["step"], float(torch.tensor(m["loss"], dtype=torch.float32))) for m in logged
    ]
