"""Every SFTConfig / TrainingArguments setting that changes the loss, through `WeightedSFTTrainer` and
`WeightedTrainer`, against stock TRL 1.16 (and stock transformers) on the same data and the same step: honoured
(equal at (0, 1), composed with the weights) or refused with one line naming it.

Real GSM8K records, the tiny Llama (and a tiny random Mixtral for the router loss), fp32, SGD with lr 1 and one
step, as in test_integrations (loss within 1e-6 relative, every parameter within 1e-4 of its largest update).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from shared import shared_file
from test_integrations import N, _args, _assert_same_step, _max_relative_difference, _params

from witune.data import alpaca_prompt
from witune.errors import ConfigError
from witune.models import load_tokenizer

trl = pytest.importorskip("trl")  # an optional extra (witune[trl])

from trl import SFTConfig, SFTTrainer  # noqa: E402

from witune.integrations.trl import WeightedSFTTrainer, add_weight_columns  # noqa: E402

_TRAINER_KW = ("prompt_weight", "response_weight", "normalization", "dynamic_weight", "allow_weight_above_one")


@pytest.fixture(scope="module")
def pc_dataset():
    """Real GSM8K records as prompt/completion data (Alpaca prompt), lengths varying."""
    import datasets

    records = json.loads(shared_file("gsm8k_train_alpaca.json").read_text())[:N]
    return datasets.Dataset.from_list(
        [{"prompt": alpaca_prompt(r["instruction"], r["input"]), "completion": r["output"]} for r in records]
    )


@pytest.fixture(scope="module")
def lm_dataset(pc_dataset):
    """The same records as plain text (language-modeling data: no prompt/completion split)."""
    import datasets

    return datasets.Dataset.from_list([{"text": r["prompt"] + r["completion"]} for r in pc_dataset])


def _trainer(model_dir: Path, ds, out: Path, cls=SFTTrainer, bs: int = N, acc: int = 1, model=None, **kw):
    from transformers import AutoModelForCausalLM

    trainer_kw = {k: kw.pop(k) for k in _TRAINER_KW if k in kw}
    model = model or AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    args = _args(out, bs, acc, cls=SFTConfig, **{"max_length": 1024, "bf16": False, **kw})  # TRL defaults to bf16
    return cls(model=model, args=args, train_dataset=ds, processing_class=load_tokenizer(model_dir), **trainer_kw)


def _step(trainer) -> tuple[float, dict[str, torch.Tensor]]:
    return trainer.train().training_loss, _params(trainer.model)


def _stock_and_ours(model_dir, ds, tmp_path, **kw):
    """Stock SFTTrainer and WeightedSFTTrainer at its defaults, same settings (to compare prepared data)."""
    stock = _trainer(model_dir, ds, tmp_path / "stock", **kw)
    ours = _trainer(model_dir, ds, tmp_path / "ours", cls=WeightedSFTTrainer, **kw)
    return stock, ours


def _steps(model_dir, ds, tmp_path, **kw) -> tuple[tuple, tuple, dict]:
    """One optimizer step of WeightedSFTTrainer (defaults) and of stock SFTTrainer, same settings; and the
    initial parameters. Each trainer is built right before its step (a step resets accelerate's state)."""
    from transformers import AutoModelForCausalLM

    init = _params(AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32))
    ours = _step(_trainer(model_dir, ds, tmp_path / "ours", cls=WeightedSFTTrainer, **kw))
    return ours, _step(_trainer(model_dir, ds, tmp_path / "stock", **kw)), init


# ---- loss_type="dft" ------------------------------------------------------------------------------------------


def test_dft_equals_stock_dft(tiny_model_dir, pc_dataset, tmp_path):
    """loss_type='dft': the same batch gives TRL's loss and gradients (1e-6), through the trainer and through
    witune's own loss functions (logits and hidden states); one step equals stock's; and it differs from nll."""
    from transformers import AutoModelForCausalLM

    from witune.loss import DFT, weighted_nll, weighted_nll_from_hidden

    stock, ours = _stock_and_ours(tiny_model_dir, pc_dataset, tmp_path, loss_type="dft")
    assert stock.train_dataset["labels"] == ours.train_dataset["labels"]
    batch = stock.data_collator([stock.train_dataset[i] for i in range(N)])
    ours_batch = ours.data_collator([ours.train_dataset[i] for i in range(N)])
    stock.model.train(), ours.model.train()
    want = stock.compute_loss(stock.model, dict(batch))
    want.backward()
    got = ours.compute_loss(ours.model, dict(ours_batch))
    got.backward()

    def same_grads(model) -> None:
        for (name, a), b in zip(model.named_parameters(), stock.model.parameters()):
            assert float((a.grad - b.grad).norm() / b.grad.norm()) < 1e-6, name

    assert float(got) == pytest.approx(float(want), rel=1e-6)
    same_grads(ours.model)
    labels = batch["labels"]
    count = (labels[:, 1:] != -100).sum()
    for path in ("logits", "hidden"):
        model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        w = (labels[:, 1:] != -100).float()
        if path == "logits":
            sums = weighted_nll(out.logits[:, :-1], labels[:, 1:], w, dynamic=DFT())
        else:
            hidden = out.hidden_states[-1][:, :-1]
            sums = weighted_nll_from_hidden(hidden, model.lm_head.weight, labels[:, 1:], w, dynamic=DFT())
        loss = sums.weighted_sum / count
        loss.backward()
        assert float(loss) == pytest.approx(float(want), rel=1e-6), path
        same_grads(model)

    dft_step, stock_step, init = _steps(tiny_model_dir, pc_dataset, tmp_path / "step", loss_type="dft")
    _assert_same_step(init, dft_step, stock_step)
    nll_step = _step(_trainer(tiny_model_dir, pc_dataset, tmp_path / "nll", cls=WeightedSFTTrainer))
    assert nll_step[0] > 10 * dft_step[0]


def test_dft_composes_with_the_prompt_weight(tiny_model_dir, pc_dataset, tmp_path):
    """At (0.3, 1) with DFT the batch loss is sum(w * p * nll) / Z over witune's weights, not TRL's mean."""
    from witune.integrations import causal_lm_loss_sums
    from witune.loss import DFT

    ours = _trainer(tiny_model_dir, pc_dataset, tmp_path, cls=WeightedSFTTrainer, loss_type="dft", prompt_weight=0.3)
    batch = ours.data_collator([ours.train_dataset[i] for i in range(N)])
    ours.model.train()
    got = ours.compute_loss(ours.model, dict(batch))
    with torch.no_grad():
        logits = ours.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    sums = causal_lm_loss_sums(logits, batch["labels"], batch["loss_weights"], dynamic=DFT())
    assert float(got) == pytest.approx(float(sums.loss("nonzero")), rel=1e-5)
    assert 0.3 in batch["loss_weights"]


# ---- label_smoothing_factor -----------------------------------------------------------------------------------


def test_label_smoothing_equals_stock(tiny_model_dir, pc_dataset, tmp_path):
    smoothed, stock, init = _steps(tiny_model_dir, pc_dataset, tmp_path, label_smoothing_factor=0.1)
    _assert_same_step(init, smoothed, stock)
    plain = _step(_trainer(tiny_model_dir, pc_dataset, tmp_path / "plain", cls=WeightedSFTTrainer))
    assert _max_relative_difference(init, smoothed[1], plain[1]) > 0.01  # the smoothing is not dropped


def test_label_smoothing_in_weighted_trainer_equals_stock_trainer(tiny_model_dir, tiny_tokenizer, tmp_path):
    """transformers' Trainer: label_smoothing_factor through WeightedTrainer == stock Trainer's LabelSmoother."""
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer

    from witune.integrations import WeightedTrainer, weighted_dataset

    ds = weighted_dataset(shared_file("alpaca_seed_tasks.jsonl"), tiny_tokenizer, 0.0, 1.0, max_length=256)
    ds = ds.select(range(N))

    def run(cls, out, **kw):
        model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
        args = _args(out, N, 1, label_smoothing_factor=0.1)
        return _step(cls(model=model, args=args, train_dataset=ds, processing_class=tiny_tokenizer, **kw))

    init = _params(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32))
    stock = run(Trainer, tmp_path / "stock", data_collator=DataCollatorForSeq2Seq(tiny_tokenizer, padding=True))
    _assert_same_step(init, run(WeightedTrainer, tmp_path / "ours"), stock)


# ---- Mixture-of-Experts router loss ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moe_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny random Mixtral (4 experts, top 2) with the tiny tokenizer, router logits on, aux coefficient 0.02."""
    from transformers import MixtralConfig, MixtralForCausalLM

    tok = load_tokenizer(tiny_model_dir)
    out = tmp_path_factory.mktemp("tiny-mixtral")
    config = MixtralConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        output_router_logits=True,
        router_aux_loss_coef=0.02,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        MixtralForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_router_aux_loss_equals_stock(moe_dir, pc_dataset, tmp_path):
    """router_aux_loss_coef=0.5 (accumulation 2): the loss includes 0.5 * aux exactly as stock TRL adds it, the
    step is stock's, and aux_loss is logged; with the coefficient 0 it is off in both."""
    from transformers import AutoModelForCausalLM

    init = _params(AutoModelForCausalLM.from_pretrained(str(moe_dir), dtype=torch.float32))
    kw = dict(bs=4, acc=2, router_aux_loss_coef=0.5)
    ours = _trainer(moe_dir, pc_dataset, tmp_path / "ours", cls=WeightedSFTTrainer, **kw)
    assert ours.aux_loss_enabled
    with_aux = _step(ours)
    stock = _trainer(moe_dir, pc_dataset, tmp_path / "stock", **kw)
    _assert_same_step(init, with_aux, _step(stock))
    assert ours.state.log_history[0]["aux_loss"] == pytest.approx(stock.state.log_history[0]["aux_loss"], rel=1e-5)
    off = _step(_trainer(moe_dir, pc_dataset, tmp_path / "off", cls=WeightedSFTTrainer, router_aux_loss_coef=0.0))
    assert with_aux[0] - off[0] > 0.5  # the aux term (about 2 x 0.5 here) is in the loss


def test_router_aux_loss_in_weighted_trainer_equals_stock_trainer(moe_dir, tmp_path):
    """A MoE model whose config returns router logits: WeightedTrainer adds coef * aux as the model's own loss
    does (stock Trainer), at accumulation 1."""
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer

    from witune.integrations import WeightedTrainer, weighted_dataset

    tok = load_tokenizer(moe_dir)
    ds = weighted_dataset(shared_file("alpaca_seed_tasks.jsonl"), tok, 0.0, 1.0, max_length=256).select(range(N))
    init = _params(AutoModelForCausalLM.from_pretrained(str(moe_dir), dtype=torch.float32))

    def run(cls, out, **kw):
        model = AutoModelForCausalLM.from_pretrained(str(moe_dir), dtype=torch.float32)
        return _step(cls(model=model, args=_args(out, N, 1), train_dataset=ds, processing_class=tok, **kw))

    stock = run(Trainer, tmp_path / "stock", data_collator=DataCollatorForSeq2Seq(tok, padding=True))
    _assert_same_step(init, run(WeightedTrainer, tmp_path / "ours"), stock)


# ---- completion_only_loss=False, the metrics, packing, truncation ---------------------------------------------


def test_completion_only_loss_false_trains_the_full_sequence_as_stock(tiny_model_dir, pc_dataset, tmp_path):
    stock, ours = _stock_and_ours(tiny_model_dir, pc_dataset, tmp_path, completion_only_loss=False)
    assert ours.train_dataset["labels"] == stock.train_dataset["labels"]
    row = ours.train_dataset[0]
    assert all(lab != -100 for lab in row["labels"])  # every token trained, as stock
    assert 0 < sum(row["response_mask"]) < len(row["response_mask"])  # the diagnostics still split at the completion
    full, stock_step, init = _steps(tiny_model_dir, pc_dataset, tmp_path / "s", completion_only_loss=False)
    _assert_same_step(init, full, stock_step)
    with pytest.raises(ConfigError, match="prompt_weight=0.1 has nothing to weight: completion_only_loss=False"):
        _trainer(
            tiny_model_dir,
            pc_dataset,
            tmp_path / "x",
            cls=WeightedSFTTrainer,
            prompt_weight=0.1,
            **{"completion_only_loss": False},
        )


def test_trl_metrics_equal_stock(tiny_model_dir, pc_dataset, tmp_path):
    """entropy, mean_token_accuracy and num_tokens are logged, with stock's values at (0, 1)."""
    ours = _trainer(tiny_model_dir, pc_dataset, tmp_path / "ours", cls=WeightedSFTTrainer, bs=4, acc=2)
    _step(ours)
    stock = _trainer(tiny_model_dir, pc_dataset, tmp_path / "stock", bs=4, acc=2)
    _step(stock)
    a, b = stock.state.log_history[0], ours.state.log_history[0]
    for key in ("entropy", "mean_token_accuracy", "num_tokens"):
        assert b[key] == pytest.approx(a[key], rel=1e-6), key
    assert b["num_tokens"] > 0 and 0 < b["entropy"]
    assert "response_nll" in b  # witune's own diagnostics next to TRL's


@pytest.mark.parametrize("strategy", ["bfd", "bfd_split", "wrapped"])
def test_packing_keeps_every_token_as_stock(tiny_model_dir, pc_dataset, tmp_path, strategy):
    """Packing rows of 198-564 tokens into 96: the packed rows (ids, labels, lengths) are stock's, so nothing is
    truncated before packing (bfd_split and wrapped keep every token, bfd cuts each sample as TRL does)."""
    stock, ours = _stock_and_ours(
        tiny_model_dir, pc_dataset, tmp_path, packing=True, packing_strategy=strategy, max_length=96
    )
    for col in ("input_ids", "labels", "seq_lengths"):
        if col in stock.train_dataset.column_names:  # wrapped packing has no sample lengths
            assert ours.train_dataset[col] == stock.train_dataset[col], col
    kept = sum(len(x) for x in ours.train_dataset["input_ids"])
    assert (kept == 96 * N) if strategy == "bfd" else (kept > 96 * N)


def test_truncation_and_the_drop_of_fully_masked_examples_follow_the_weights(tiny_model_dir, pc_dataset, tmp_path):
    """keep_start to 200 tokens cuts the whole completion of the 5 records whose prompt is longer (130-353
    tokens): at (0, 1) exactly stock's 3 examples survive (the fully masked ones are dropped, as TRL drops them);
    with a prompt weight those 5 still have tokens to train and stay."""
    kw = dict(max_length=200, truncation_mode="keep_start")
    stock, ours = _stock_and_ours(tiny_model_dir, pc_dataset, tmp_path, **kw)
    assert len(stock.train_dataset) == 3
    assert ours.train_dataset["input_ids"] == stock.train_dataset["input_ids"]
    assert ours.train_dataset["labels"] == stock.train_dataset["labels"]
    assert all(len(x) <= 200 for x in ours.train_dataset["loss_weights"])
    weighted = _trainer(tiny_model_dir, pc_dataset, tmp_path / "p", cls=WeightedSFTTrainer, prompt_weight=0.3, **kw)
    assert len(weighted.train_dataset) == N


def test_the_normaliser_never_counts_position_0(tiny_model_dir, pc_dataset, tmp_path):
    """At lambda_p != 0 every sequence's first token carries a label (TRL's, kept), yet nothing predicts it: Z (and
    the Trainer's own count) leave it out, unlike WIT's FSDP script, which counts it (docs/loss.md)."""
    ours = _trainer(tiny_model_dir, pc_dataset, tmp_path, cls=WeightedSFTTrainer, prompt_weight=0.3)
    batch = ours.data_collator([ours.train_dataset[i] for i in range(N)])
    assert bool((batch["labels"][:, 0] != -100).all())  # the first tokens are labelled prompt tokens here
    trained = int((batch["loss_weights"][:, 1:] != 0).sum())
    z = ours.step_normalizer([batch], None, torch.device("cpu"))
    assert int(z) == trained == int((batch["labels"] != -100).sum()) - N


# ---- the data's own labels ------------------------------------------------------------------------------------


def test_existing_labels_are_kept(tiny_model_dir, tmp_path):
    """Data with its own labels: a user's -100 stays -100 with weight 0, the labels are stock's; prompt_weight
    has nothing to weight there and is refused."""
    import datasets

    tok = load_tokenizer(tiny_model_dir)
    ids = [tok(t)["input_ids"] for t in ("add two and three", "the cat likes a long letter today")]
    labels = [[t if i % 2 == 0 else -100 for i, t in enumerate(row)] for row in ids]
    ds = datasets.Dataset.from_list([{"input_ids": i, "labels": lab} for i, lab in zip(ids, labels)])
    stock, ours = _stock_and_ours(tiny_model_dir, ds, tmp_path, bs=2)
    assert ours.train_dataset["labels"] == stock.train_dataset["labels"] == labels
    for row in ours.train_dataset:
        assert [w != 0 for w in row["loss_weights"]] == [lab != -100 for lab in row["labels"]]
    with pytest.raises(ConfigError, match="prompt_weight=0.2 has nothing to weight: the dataset's own labels"):
        _trainer(tiny_model_dir, ds, tmp_path / "x", cls=WeightedSFTTrainer, bs=2, prompt_weight=0.2)


@pytest.mark.parametrize("completion_only", [None, True])
def test_pretokenized_completion_mask_as_stock(tiny_model_dir, tmp_path, completion_only):
    """Token ids with a completion_mask column: TRL applies the mask only when completion_only_loss is True (unset
    means False for data without prompt/completion text); the labels follow stock either way."""
    import datasets

    rows = [
        {"input_ids": [5, 6, 7, 8, 9], "completion_mask": [0, 0, 1, 1, 1]},
        {"input_ids": [10, 11, 12], "completion_mask": [0, 1, 1]},
    ]
    kw = {"bs": 2, "completion_only_loss": completion_only}
    stock, ours = _stock_and_ours(tiny_model_dir, datasets.Dataset.from_list(rows), tmp_path, **kw)
    assert ours.train_dataset["labels"] == stock.train_dataset["labels"]
    assert (ours.train_dataset[0]["labels"][0] == -100) == bool(completion_only)
    assert ours.train_dataset[0]["response_mask"] == [False, False, True, True, True]


def test_add_weight_columns_keeps_masked_labels_at_prompt_weight_zero():
    row = {"input_ids": [1, 2, 3, 4], "labels": [1, -100, 3, -100]}
    got = add_weight_columns(row, 0.0, 1.0)
    assert got["labels"] == [1, -100, 3, -100] and got["loss_weights"] == [1.0, 0.0, 1.0, 0.0]
    split = add_weight_columns(row, 0.3, 1.0)  # TRL's completion-only labels: the masked tokens are the prompt
    assert split["labels"] == [1, 2, 3, 4] and split["loss_weights"] == [1.0, 0.3, 1.0, 0.3]
    assert split["response_mask"] == [True, False, True, False]


# ---- refused ----------------------------------------------------------------------------------------------------


def test_settings_that_cannot_compose_are_refused(tiny_model_dir, pc_dataset, lm_dataset, tiny_tokenizer, tmp_path):
    import datasets

    from witune.integrations import WeightedTrainer, weighted_dataset

    def ours(ds=pc_dataset, **kw):
        return _trainer(tiny_model_dir, ds, tmp_path, cls=WeightedSFTTrainer, **kw)

    def loss_func(outputs, labels, num_items_in_batch=None):
        return outputs.loss

    with pytest.raises(ConfigError, match="compute_loss_func replaces the loss"):
        WeightedSFTTrainer(model=None, args=SFTConfig(str(tmp_path), use_cpu=True), compute_loss_func=loss_func)
    wds = weighted_dataset([{"prompt": "a b", "completion": " c d"}], tiny_tokenizer, 0.0, 1.0)
    with pytest.raises(ConfigError, match="compute_loss_func replaces the loss"):
        WeightedTrainer(
            model=None,
            args=_args(tmp_path, 1, 1),
            train_dataset=wds,
            processing_class=tiny_tokenizer,
            compute_loss_func=loss_func,
        )
    with pytest.raises(ConfigError, match="label_smoothing_factor=0.1 with the dynamic weight 'dft' is not defined"):
        ours(loss_type="dft", label_smoothing_factor=0.1)
    with pytest.raises(ConfigError, match="prompt_weight=0.1 has nothing to weight: language-modeling data"):
        ours(lm_dataset, prompt_weight=0.1)
    with pytest.raises(ConfigError, match="response_weight is 2, above the papers' range"):
        ours(response_weight=2.0)
    assert ours(response_weight=2.0, allow_weight_above_one=True).witune_weights.response == 2.0
    wrows = weighted_dataset([{"prompt": "a b", "completion": " c d"}], tiny_tokenizer, 0.1, 1.0)
    with pytest.raises(ConfigError, match="already has loss_weights .*: prompt_weight would not apply"):
        ours(wrows, prompt_weight=0.3)
    ids = datasets.Dataset.from_list([{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}])
    with pytest.raises(ConfigError, match="skip_prepare_dataset.*has none"):
        ours(ids, dataset_kwargs={"skip_prepare_dataset": True})
    # no prompt weight given on language-modeling data: every token trained, exactly as stock (no refusal)
    stock, plain = _stock_and_ours(tiny_model_dir, lm_dataset, tmp_path / "lm")
    assert plain.train_dataset["labels"] == stock.train_dataset["labels"]
