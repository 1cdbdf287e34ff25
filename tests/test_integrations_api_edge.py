"""The Python API's edge (witune.integrations): what the CLI refuses is refused here too, in one clear line,
before anything trains; and nothing trains a loss of 0.0 in silence."""

from __future__ import annotations

import json
import math

import pytest
import torch
from shared import shared_file
from test_integrations import _args

from witune.errors import ConfigError, DataError
from witune.integrations import WeightedCollator, WeightedTrainer, weighted_dataset
from witune.integrations.hf_trainer import check_normalization


@pytest.fixture(scope="module")
def rows(tiny_tokenizer):
    ds = weighted_dataset(shared_file("alpaca_seed_tasks.jsonl"), tiny_tokenizer, 0.3, 1.0, max_length=128)
    return [ds[i] for i in range(4)]


def test_skipping_every_record_is_an_error_not_an_empty_dataset(tiny_tokenizer, tmp_path):
    bad = [{"instruction": 3, "output": "x"}, {"nothing": "here"}]
    with pytest.raises(DataError, match=r"no usable examples \(2 bad records skipped"):
        weighted_dataset(bad, tiny_tokenizer, on_error="skip")
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in bad) + "\n")
    with pytest.raises(DataError, match="no usable examples"):
        weighted_dataset(path, tiny_tokenizer, on_error="skip")
    # every record renders, none survives: dropped as too long
    long = [{"prompt": "word " * 300, "completion": " answer"}]
    with pytest.raises(ConfigError, match=r"no trainable rows in list \(0 rows, 1 dropped as too long"):
        weighted_dataset(long, tiny_tokenizer, max_length=16, truncation="drop", on_error="skip")


def test_bad_arguments_are_one_clear_error(tiny_tokenizer):
    records = [{"prompt": "a b", "completion": " c d"}]
    with pytest.raises(ConfigError, match="max_length must be >= 2 or None, got 0"):
        weighted_dataset(records, tiny_tokenizer, max_length=0)
    with pytest.raises(
        ConfigError, match=r"prompt_weight is 5, above the papers' range \[0, 1\]; if you mean it, pass"
    ):
        weighted_dataset(records, tiny_tokenizer, 5.0, 1.0)
    assert 5.0 in weighted_dataset(records, tiny_tokenizer, 5.0, 1.0, allow_weight_above_one=True)[0]["loss_weights"]
    with pytest.raises(ConfigError, match=r"role_weights\['system'\] is 3"):
        weighted_dataset(records, tiny_tokenizer, role_weights={"system": 3.0})
    with pytest.raises(ConfigError, match="prompt_weight must be a finite number >= 0, got nan"):
        weighted_dataset(records, tiny_tokenizer, float("nan"), 1.0)
    with pytest.raises(ConfigError, match="pad_token_id must be a token id"):
        WeightedCollator()
    with pytest.raises(ConfigError, match="pad_token_id must be a token id .* got None"):
        WeightedCollator(pad_token_id=None)
    with pytest.raises(ValueError, match="no rows to collate"):
        WeightedCollator(0)([])
    with pytest.raises(ValueError, match="rows have no loss_weights column: build them with"):
        WeightedCollator(0)([{"input_ids": [1, 2, 3]}])


@pytest.mark.parametrize("value", [None, True, math.inf, math.nan, 1e-300, 0, -2, "tokens", "mean"])
def test_normalization_refused(value):
    with pytest.raises(ConfigError, match="normalization"):
        check_normalization(value)


def test_normalization_none_refused_by_the_trainer(tiny_model, tiny_tokenizer, rows, tmp_path):
    with pytest.raises(ConfigError, match="normalization must be one of .* got None"):
        WeightedTrainer(
            model=tiny_model, args=_args(tmp_path, 2, 1), processing_class=tiny_tokenizer, normalization=None
        )
    assert check_normalization(512) == 512.0 and check_normalization("weight_sum") == "weight_sum"


def test_rows_that_break_the_contract_are_refused(tiny_tokenizer, rows):
    collate = WeightedCollator(tiny_tokenizer.pad_token_id)
    masked = dict(rows[1], labels=[-100] * len(rows[1]["labels"]))  # labels all -100, weights > 0
    with pytest.raises(ValueError, match=r"row 1: labels\[\d+\] is -100 but loss_weights\[\d+\] is"):
        collate([rows[0], masked])
    nan = dict(rows[0], loss_weights=[float("nan")] * len(rows[0]["loss_weights"]))
    with pytest.raises(ValueError, match=r"row 0: loss_weights\[0\] is nan; weights must be finite and >= 0"):
        collate([nan])
    negative = dict(rows[0], loss_weights=[-1.0] * len(rows[0]["loss_weights"]))
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        collate([negative])
    trained_at_zero = dict(rows[0], loss_weights=[0.0] * len(rows[0]["loss_weights"]))  # labels kept, weights 0
    with pytest.raises(ValueError, match="labels must be -100 exactly where the weight is 0"):
        collate([trained_at_zero])
    # without labels they follow from the weights
    unlabelled = {k: v for k, v in rows[0].items() if k != "labels"}
    assert torch.equal(collate([unlabelled])["labels"], collate([rows[0]])["labels"])


def test_padding_free_sample_lengths_must_split_the_row(tiny_tokenizer, rows):
    collate = WeightedCollator(tiny_tokenizer.pad_token_id, padding_free=True)
    n = len(rows[0]["input_ids"])
    assert (collate([dict(rows[0], seq_lengths=[3, n - 3])])["position_ids"][0] == 0).sum() == 2
    with pytest.raises(ValueError, match=rf"seq_lengths \[3, 4\] do not split the row of {n} tokens"):
        collate([dict(rows[0], seq_lengths=[3, 4])])
    with pytest.raises(ValueError, match="do not split the row"):
        collate([dict(rows[0], seq_lengths=[0, n])])


def test_a_step_with_nothing_to_train_is_an_error(tiny_model, tiny_tokenizer, tmp_path):
    """Rows whose labels are all -100 with weights 0 pass the row contract but train nothing: refused at the step."""
    import datasets

    ids = tiny_tokenizer("the cat likes a long letter today")["input_ids"]
    row = {"input_ids": ids, "labels": [-100] * len(ids), "loss_weights": [0.0] * len(ids)}
    ds = datasets.Dataset.from_list([row, row])
    trainer = WeightedTrainer(
        model=tiny_model, args=_args(tmp_path, 2, 1), train_dataset=ds, processing_class=tiny_tokenizer
    )
    with pytest.raises(ValueError, match="no token of this optimizer step has a non-zero loss weight"):
        trainer.train()
