"""`DataError` carries a kind that callers branch on, and survives pickling (worker processes send it back)."""

import pickle

import pytest

from witune.data.formats import to_examples
from witune.errors import ERROR_KINDS, DataError, Location


def test_data_error_pickles_with_all_its_parts():
    err = DataError(
        Location("d.jsonl", 7, "line"), "empty response: nothing to train on", "output", kind="empty_response"
    )
    back = pickle.loads(pickle.dumps(err))
    assert (
        type(back) is DataError
        and str(back) == str(err) == "d.jsonl, line 7, field 'output': empty response: nothing to train on"
    )
    assert (back.location, back.reason, back.field, back.kind) == (err.location, err.reason, err.field, err.kind)
    assert pickle.loads(pickle.dumps(DataError(None, "no location"))).kind == "invalid"


def test_kind_is_checked_and_set_where_records_are_converted():
    with pytest.raises(ValueError, match="unknown DataError kind"):
        DataError(None, "x", kind="typo")  # type: ignore[arg-type]
    loc = Location("d.jsonl", 1, "line")
    kinds = {}
    for name, rec in {
        "empty_response": {"instruction": "q", "input": "", "output": "  "},
        "missing_field": {"instruction": "q", "input": ""},
        "wrong_type": {"instruction": "q", "input": "", "output": 3},
    }.items():
        with pytest.raises(DataError) as info:
            to_examples(rec, "alpaca", loc)
        kinds[name] = info.value.kind
    assert kinds == {k: k for k in kinds} and set(kinds) <= set(ERROR_KINDS)


def test_on_error_is_raise_or_skip_and_nothing_else(tiny_tokenizer):
    # Any value other than "raise" used to skip bad records in silence (a typo dropped data without a word).
    from datasets import Dataset

    from witune.data import RoleWeights, tokenize_examples
    from witune.integrations import weighted_dataset

    examples = to_examples({"instruction": "q", "input": "", "output": "a"}, "alpaca", Location("d.jsonl", 1, "line"))
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip', got 'ignore'"):
        tokenize_examples(examples, tiny_tokenizer, RoleWeights(0.0, 1.0), on_error="ignore")
    records = Dataset.from_list([{"instruction": "q", "input": "", "output": "a"}])
    with pytest.raises(ValueError, match="got 'Skip'"):
        weighted_dataset(records, tiny_tokenizer, 0.0, 1.0, on_error="Skip")
    assert len(tokenize_examples(examples, tiny_tokenizer, RoleWeights(0.0, 1.0), on_error="skip").rows) == 1


def test_numbers_in_messages_are_shown_as_they_are():
    """A NaN read from Parquet is a numpy float: the message says nan, not np.float64(nan); a PLW of 1.0000001
    is refused as 1.0000001, not as "1, above the papers' range" (which reads as if 1 were refused)."""
    import numpy as np

    from witune.data.formats import data_weight
    from witune.data.weights import check_weight_range
    from witune.errors import ConfigError

    with pytest.raises(DataError, match=r"got nan$"):
        data_weight(np.float64("nan"), Location("x.parquet", 2), "weight")
    with pytest.raises(ConfigError, match=r"^plw is 1\.0000001, above"):
        check_weight_range({"plw": 1.0000001}, allow_above_one=False, hint="pass --allow-weights-above-one")
    with pytest.raises(ConfigError, match=r"got nan$"):
        check_weight_range({"plw": np.float64("nan")}, allow_above_one=False, hint="")
