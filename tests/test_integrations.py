"""witune's weighted loss inside transformers' Trainer and TRL's SFTTrainer (witune.integrations).

Real Trainer / SFTTrainer, the tiny Llama (fp32, CPU, SGD with lr 1 so that one step moves every tensor), real
records from ../shared/data. Tolerances as in test_train_invariance: loss within 1e-6 relative, every parameter
within 1e-4 of that tensor's largest update.
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
from shared import shared_file

from witune.data import RoleWeights, alpaca_prompt, load_examples, tokenize_examples
from witune.integrations import WeightedCollator, WeightedTrainer, weighted_dataset
from witune.models import load_tokenizer
from witune.train import load_config, train

LOSS_RTOL = 1e-6
PARAM_TOL = 1e-4
N = 8  # samples in the one optimizer step
MAX_LEN = 256


@pytest.fixture(scope="module")
def seed_file() -> Path:
    return shared_file("alpaca_seed_tasks.jsonl")  # 175 real tasks of very different prompt/response lengths


def _witune_step(
    model_dir: Path, data: Path, out: Path, prompt: float, norm: str = "nonzero", n: int = N, max_length: int = MAX_LEN
):
    cfg = load_config(
        overrides=dict(
            model=str(model_dir),
            data=str(data),
            limit=n,
            max_length=max_length,
            prompt_weight=prompt,
            response_weight=1.0,
            normalization=norm,
            optimizer="sgd",
            learning_rate=1.0,
            warmup_ratio=0.0,
            lr_scheduler="constant",
            max_grad_norm=0.0,
            max_steps=1,
            per_device_batch_size=n,
            seed=3,
            progress=False,
            output_dir=str(out),
        )
    )
    result = train(cfg)
    return result.final_loss, load_file(str(result.model_dir / "model.safetensors"))


def _args(out: Path, bs: int, acc: int, cls=None, **kw):
    from transformers import TrainingArguments

    cls = cls or TrainingArguments
    return cls(
        output_dir=str(out),
        per_device_train_batch_size=bs,
        gradient_accumulation_steps=acc,
        max_steps=1,
        learning_rate=1.0,
        optim="sgd",
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=0.0,
        weight_decay=0.0,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        seed=3,
        disable_tqdm=True,
        **kw,
    )


def _params(model) -> dict[str, torch.Tensor]:
    from accelerate.state import AcceleratorState, GradientState

    # a Trainer leaves accelerate's process-wide state behind; `witune train` builds its own Accelerator next
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _trainer_step(model_dir, ds, tok, out, bs, acc, norm="nonzero", cls=None, **kw):
    from transformers import AutoModelForCausalLM

    cls = cls or WeightedTrainer
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    trainer = cls(
        model=model, args=_args(out, bs, acc), train_dataset=ds, processing_class=tok, normalization=norm, **kw
    )
    return trainer.train().training_loss, _params(model)


def _assert_same_step(init: dict, a: tuple, b: tuple) -> None:
    (loss_a, pa), (loss_b, pb) = a, b
    assert loss_a == pytest.approx(loss_b, rel=LOSS_RTOL)
    for k in init:
        update = (pb[k] - init[k]).abs().max()
        assert update > 0, f"{k} did not change: the test would prove nothing"
        assert (pa[k] - pb[k]).abs().max() <= PARAM_TOL * update, k


def _max_relative_difference(init: dict, a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max() / (b[k] - init[k]).abs().max()) for k in init)


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def ds(seed_file, tok):
    return weighted_dataset(seed_file, tok, 0.3, 1.0, max_length=MAX_LEN).select(range(N))


@pytest.fixture(scope="module")
def init(tiny_model_dir):
    return load_file(str(tiny_model_dir / "model.safetensors"))


def test_dataset_is_witune_rendering(seed_file, tok, ds):
    """Token for token and weight for weight what witune renders; labels -100 exactly where the weight is 0."""
    rows = tokenize_examples(
        load_examples(seed_file, limit=N).examples, tok, RoleWeights(0.3, 1.0), max_length=MAX_LEN
    ).rows
    assert len(ds) == N and [len(r) for r in rows] == [len(x) for x in ds["input_ids"]]
    for r, x in zip(rows, ds):
        assert x["input_ids"] == r.input_ids and x["loss_weights"] == pytest.approx(r.weights)
        assert x["response_mask"] == r.response and x["roles"] == r.roles
        assert [lab == -100 for lab in x["labels"]] == [w == 0 for w in r.weights]
    assert {w for x in ds for w in x["loss_weights"]} == {0.0, 0.3, 1.0}
    # a datasets.Dataset of the same records gives the same rows
    import datasets

    records = [json.loads(line) for line in seed_file.read_text().splitlines()[:N]]
    again = weighted_dataset(datasets.Dataset.from_list(records), tok, 0.3, 1.0, max_length=MAX_LEN)
    assert again["input_ids"] == ds["input_ids"] and again["loss_weights"] == ds["loss_weights"]


def test_collator_padding_free_keeps_weights_aligned(ds, tok):
    rows = [ds[i] for i in range(3)]
    padded = WeightedCollator(tok.pad_token_id)(rows)
    flat = WeightedCollator(tok.pad_token_id, padding_free=True)(rows)
    assert flat["input_ids"].shape[0] == 1 and "attention_mask" not in flat
    real = padded["attention_mask"].bool()
    for key in ("input_ids", "labels", "loss_weights", "response_mask"):
        assert torch.equal(padded[key][real], flat[key][0]), key
    assert (flat["position_ids"][0] == 0).sum() == 3


@pytest.mark.parametrize("norm", ["nonzero", "weight_sum"])
def test_one_trainer_step_equals_witune_train(tiny_model_dir, seed_file, tok, ds, init, tmp_path, norm):
    ours = _trainer_step(tiny_model_dir, ds, tok, tmp_path / "hf", N, 1, norm)
    ref = _witune_step(tiny_model_dir, seed_file, tmp_path / "witune", 0.3, norm)
    _assert_same_step(init, ours, ref)


def test_accumulation_and_padding_free_invariance(tiny_model_dir, tok, ds, init, tmp_path):
    """batch 8 x accumulation 1 == batch 2 x accumulation 4 == padding-free batch 2 x accumulation 4."""
    full = _trainer_step(tiny_model_dir, ds, tok, tmp_path / "a", N, 1)
    _assert_same_step(init, _trainer_step(tiny_model_dir, ds, tok, tmp_path / "b", 2, 4), full)
    _assert_same_step(init, _trainer_step(tiny_model_dir, ds, tok, tmp_path / "c", 2, 4, padding_free=True), full)


class _NaiveTrainer(WeightedTrainer):
    """The bug class ruled out: each micro-batch normalised by its own count, then averaged over accumulation."""

    loss_is_scaled_for_ga = False

    def step_normalizer(self, batches, trainer_count, device):
        return None


def test_naive_micro_batch_mean_differs(tiny_model_dir, tok, ds, init, tmp_path):
    full = _trainer_step(tiny_model_dir, ds, tok, tmp_path / "a", N, 1)
    naive = _trainer_step(tiny_model_dir, ds, tok, tmp_path / "n", 2, 4, cls=_NaiveTrainer)
    assert _max_relative_difference(init, naive[1], full[1]) > 0.01


# ---- TRL ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pc_dataset(tok):
    """Real GSM8K records as TRL prompt/completion data (Alpaca prompt), lengths varying."""
    import datasets

    records = json.loads(shared_file("gsm8k_train_alpaca.json").read_text())[:N]
    return datasets.Dataset.from_list(
        [{"prompt": alpaca_prompt(r["instruction"], r["input"]), "completion": r["output"]} for r in records]
    )


def _sft(model_dir, ds, out, cls=None, bs=N, acc=1, **kw):
    pytest.importorskip("trl")  # an optional extra (witune[trl])
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    weight_kw = {k: kw.pop(k) for k in ("prompt_weight", "response_weight", "normalization") if k in kw}
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    args = _args(out, bs, acc, cls=SFTConfig, **{"max_length": 1024, "bf16": False, **kw})  # TRL defaults to bf16
    trainer = (cls or SFTTrainer)(
        model=model, args=args, train_dataset=ds, processing_class=load_tokenizer(model_dir), **weight_kw
    )
    return trainer, model


def test_trl_at_0_1_is_completion_only_loss(tiny_model_dir, pc_dataset, tmp_path):
    from witune.integrations.trl import WeightedSFTTrainer

    stock, m1 = _sft(tiny_model_dir, pc_dataset, tmp_path / "s")
    ours, m2 = _sft(tiny_model_dir, pc_dataset, tmp_path / "w", cls=WeightedSFTTrainer, prompt_weight=0.0)
    assert stock.completion_only_loss
    a, b = stock.train_dataset, ours.train_dataset
    assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]  # TRL's own masking, unchanged
    batch_a = stock.data_collator([a[i] for i in range(N)])
    batch_b = ours.data_collator([b[i] for i in range(N)])
    m1.train(), m2.train()
    loss_a = stock.compute_loss(m1, batch_a)
    loss_b = ours.compute_loss(m2, batch_b)
    assert float(loss_b) == pytest.approx(float(loss_a), rel=1e-6)
    # and the weight changes something: prompt tokens now count
    weighted, _ = _sft(tiny_model_dir, pc_dataset, tmp_path / "p", cls=WeightedSFTTrainer, prompt_weight=0.3)
    row = weighted.train_dataset[0]
    assert 0.3 in row["loss_weights"] and sum(x != -100 for x in row["labels"]) > sum(x != -100 for x in a[0]["labels"])


def test_trl_packed_equals_padded(tiny_model_dir, pc_dataset, init, tmp_path):
    """TRL packing (BFD, padding-free) and padded batches take the same weighted step."""
    from witune.integrations.trl import WeightedSFTTrainer

    results = []
    for name, kw in [("padded", {}), ("packed", {"packing": True})]:
        trainer, model = _sft(
            tiny_model_dir, pc_dataset, tmp_path / name, cls=WeightedSFTTrainer, prompt_weight=0.3, **kw
        )
        if kw:
            assert len(trainer.train_dataset) < N and "seq_lengths" in trainer.train_dataset.column_names
        results.append((trainer.train().training_loss, _params(model)))
    _assert_same_step(init, results[1], results[0])


def test_trl_step_on_weighted_dataset_equals_witune_train(tiny_model_dir, seed_file, ds, init, tmp_path):
    """witune's rendering through SFTTrainer (fused head, accumulation 4) == one `witune train` step."""
    from witune.integrations.trl import WeightedSFTTrainer

    trainer, model = _sft(tiny_model_dir, ds, tmp_path / "t", cls=WeightedSFTTrainer, bs=2, acc=4)  # rows: 0.3
    ours = (trainer.train().training_loss, _params(model))
    _assert_same_step(init, ours, _witune_step(tiny_model_dir, seed_file, tmp_path / "witune", 0.3))


_DDP_SCRIPT = """
import json, sys, torch
from transformers import AutoModelForCausalLM, TrainingArguments
from safetensors.torch import save_file
from witune.integrations import WeightedTrainer, weighted_dataset
from witune.models import load_tokenizer
spec = json.loads(sys.argv[1])
tok = load_tokenizer(spec["model"])
ds = weighted_dataset(spec["data"], tok, 0.3, 1.0, max_length=spec["max_length"]).select(range(spec["n"]))
model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
args = TrainingArguments(output_dir=spec["out"], per_device_train_batch_size=2, gradient_accumulation_steps=2,
                         max_steps=1, learning_rate=1.0, optim="sgd", lr_scheduler_type="constant", warmup_steps=0,
                         max_grad_norm=0.0, weight_decay=0.0, report_to="none", save_strategy="no", use_cpu=True,
                         seed=3, disable_tqdm=True, logging_steps=1)
trainer = WeightedTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, normalization=spec["norm"])
loss = trainer.train().training_loss
if trainer.is_world_process_zero():
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, spec["out"] + "/params.safetensors")
    print("RESULT", loss, flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["nonzero", "weight_sum"])
def test_two_process_trainer_invariance(tiny_model_dir, seed_file, tok, ds, init, tmp_path, norm):
    """2 processes (torchrun, gloo) x batch 2 x accumulation 2 through the Trainer == batch 8 x accumulation 1."""
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    out = tmp_path / "ddp"
    out.mkdir()
    spec = dict(model=str(tiny_model_dir), data=str(seed_file), max_length=MAX_LEN, n=N, out=str(out), norm=norm)
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
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loss = float(next(ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("RESULT")))
    ddp = (loss, load_file(str(out / "params.safetensors")))
    _assert_same_step(init, ddp, _trainer_step(tiny_model_dir, ds, tok, tmp_path / "one", N, 1, norm))


def test_bad_settings_are_one_clear_error(tiny_model_dir, tok, ds, tmp_path):
    from transformers import AutoModelForCausalLM

    from witune.data import ConfigError

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    with pytest.raises(ValueError, match="normalization 'tokens' is not available"):
        WeightedTrainer(
            model=model, args=_args(tmp_path, 2, 1), train_dataset=ds, processing_class=tok, normalization="tokens"
        )
    with pytest.raises(ConfigError, match="both zero"):
        weighted_dataset([{"prompt": "a", "completion": "b"}], tok, 0.0, 0.0)
    with pytest.raises(ValueError, match="must stay aligned"):
        WeightedCollator(tok.pad_token_id)([{"input_ids": [1, 2, 3], "labels": [1, 2, 3], "loss_weights": [0, 1]}])


def test_witune_loss_does_not_import_trl_or_trainer():
    code = (
        "import sys, witune, witune.loss; print(sorted(m for m in ('trl', 'witune.integrations') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_smollm2_trainer_step_and_trl_at_0_1(smollm2_dir, seed_file, tmp_path):
    """SmolLM2-135M, real records: one WeightedTrainer step (batch 2 x accumulation 2) == one `witune train` step
    (batch 4), and at (0, 1) WeightedSFTTrainer's loss == TRL's completion_only_loss on a chat-template batch."""
    tok = load_tokenizer(smollm2_dir)
    data = weighted_dataset(seed_file, tok, 0.2, 1.0, max_length=128).select(range(4))
    init = load_file(str(smollm2_dir / "model.safetensors"))
    ours = _trainer_step(smollm2_dir, data, tok, tmp_path / "hf", 2, 2)
    ref = _witune_step(smollm2_dir, seed_file, tmp_path / "witune", 0.2, n=4, max_length=128)
    _assert_same_step(init, ours, ref)

    import datasets

    from witune.integrations.trl import WeightedSFTTrainer

    records = json.loads(shared_file("gsm8k_train_alpaca.json").read_text())[:4]
    chat = datasets.Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["instruction"]}],
                "completion": [{"role": "assistant", "content": r["output"]}],
            }
            for r in records
        ]
    )
    stock, m1 = _sft(smollm2_dir, chat, tmp_path / "s", bs=4, max_length=256)
    weighted, m2 = _sft(
        smollm2_dir, chat, tmp_path / "w", cls=WeightedSFTTrainer, bs=4, max_length=256, prompt_weight=0.0
    )
    rows_a, rows_b = [stock.train_dataset[i] for i in range(4)], [weighted.train_dataset[i] for i in range(4)]
    assert [r["labels"] for r in rows_a] == [r["labels"] for r in rows_b]
    m1.train(), m2.train()
    loss_a = stock.compute_loss(m1, stock.data_collator(rows_a)).detach()
    loss_b = weighted.compute_loss(m2, weighted.data_collator(rows_b)).detach()
    assert float(loss_b) == pytest.approx(float(loss_a), rel=1e-6)


def test_evaluate_gives_the_weighted_loss(tiny_model_dir, tok, ds, tmp_path):
    """Trainer.evaluate on one batch of all samples == the weighted loss of that batch computed directly."""
    from transformers import AutoModelForCausalLM

    from witune.integrations import causal_lm_loss_sums

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    trainer = WeightedTrainer(
        model=model,
        args=_args(tmp_path, 2, 1, per_device_eval_batch_size=N),
        eval_dataset=ds,
        processing_class=tok,
        normalization="weight_sum",
    )
    got = trainer.evaluate()["eval_loss"]
    batch = WeightedCollator(tok.pad_token_id)([ds[i] for i in range(N)])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    want = causal_lm_loss_sums(logits, batch["labels"], batch["loss_weights"]).loss("weight_sum")
    assert got == pytest.approx(float(want), rel=1e-5)


def test_dataset_chat_data_multi_turn(tok):
    """ShareGPT conversations (chat template, several assistant turns): witune's rows and role mask, unchanged."""
    path = shared_file("fastchat_dummy_conversation_sharegpt.json")
    records = json.loads(path.read_text())[:4]
    got = weighted_dataset(records, tok, 0.1, 1.0, role_weights={"system": 0.0})
    rows = tokenize_examples(load_examples(path, limit=4).examples, tok, RoleWeights(0.1, 1.0, {"system": 0.0})).rows
    assert got["input_ids"] == [r.input_ids for r in rows] and got["roles"] == [r.roles for r in rows]
    assert got["loss_weights"] == [pytest.approx(r.weights) for r in rows]
    spans = [sum(1 for a, b in zip(x, x[1:]) if b and not a) for x in got["response_mask"]]
    assert spans == [sum(t["from"] == "gpt" for t in r["conversations"]) for r in records]  # every assistant turn
    assert max(spans) >= 2
