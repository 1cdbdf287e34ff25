"""Reading every supported file type and format, and clear errors for bad input."""

import json

import pytest

from witune.data import DataError, load_examples


def write(tmp_path, name, text, mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


ALPACA = [
    {"instruction": "Add the numbers.", "input": "2 3", "output": "5"},
    {"instruction": "Say hi.", "input": "", "output": "Hi!"},
]


def test_alpaca_json_and_jsonl(tmp_path):
    for p in (
        write(tmp_path, "a.json", json.dumps(ALPACA)),
        write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in ALPACA) + "\n"),
    ):
        res = load_examples(p)
        assert res.format == "alpaca" and len(res.examples) == 2
        ex = res.examples[0]
        assert ex.fields == ALPACA[0]
        assert [m.role for m in ex.messages] == ["user", "assistant"]
        assert ex.response_text == "5" and ex.prompt_text == "Add the numbers.\n\n2 3"


def test_csv_and_parquet(tmp_path):
    import pandas as pd

    df = pd.DataFrame(
        [{"prompt": "2+2=", "completion": " 4"}, {"prompt": "Capital of France?", "completion": " Paris"}]
    )
    csv, pq = tmp_path / "d.csv", tmp_path / "d.parquet"
    df.to_csv(csv, index=False)
    df.to_parquet(pq)
    for p in (csv, pq):
        res = load_examples(p)
        assert res.format == "prompt_completion"
        assert [e.response_text for e in res.examples] == [" 4", " Paris"]
    assert str(load_examples(csv).examples[1].location) == f"{csv}, line 3"


def test_saved_dataset_folder_and_data_file_folder(tmp_path):
    import datasets

    rows = {"messages": [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]]}
    datasets.Dataset.from_dict(rows).save_to_disk(tmp_path / "saved")
    assert load_examples(tmp_path / "saved").examples[0].response_text == "hello"
    (tmp_path / "files").mkdir()
    write(tmp_path / "files", "train.jsonl", json.dumps(ALPACA[0]) + "\n")
    res = load_examples(str(tmp_path / "files"))
    assert res.format == "alpaca" and res.examples[0].response_text == "5"


def test_sharegpt_and_self_instruct(tmp_path):
    share = [
        {
            "id": "x",
            "conversations": [
                {"from": "human", "value": "Who are you?"},
                {"from": "gpt", "value": "A bot."},
                {"from": "human", "value": "Bye"},
                {"from": "gpt", "value": "Bye!"},
            ],
        }
    ]
    ex = load_examples(write(tmp_path, "s.json", json.dumps(share))).examples[0]
    assert [m.role for m in ex.messages] == ["user", "assistant", "user", "assistant"]
    seed = {
        "id": "s",
        "instruction": "Do it",
        "instances": [{"input": "", "output": "done"}, {"input": "x", "output": "y"}],
    }
    res = load_examples(write(tmp_path, "seed.jsonl", json.dumps(seed) + "\n"))
    assert res.format == "self_instruct" and [e.response_text for e in res.examples] == ["done", "y"]


def test_alpaca_history_becomes_conversation(tmp_path):
    rec = {"instruction": "And now?", "input": "", "output": "Now this.", "history": [["First?", "First answer."]]}
    ex = load_examples(write(tmp_path, "h.json", json.dumps([rec]))).examples[0]
    assert [m.content for m in ex.messages] == ["First?", "First answer.", "And now?", "Now this."]


@pytest.mark.parametrize(
    "content, field, message",
    [
        ('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": \n', None, "line 2: malformed JSON"),
        (
            '{"instruction": "a", "input": "", "output": "b"}\n{"instruction": "a", "input": ""}\n',
            "output",
            "line 2, field 'output': missing field",
        ),
        ('{"instruction": "a", "output": 3}\n', "output", "line 1, field 'output': expected a string, got int"),
        ('{"instruction": "a", "output": "   "}\n', "output", "line 1, field 'output': empty response"),
        (
            '{"messages": [{"role": "user", "content": "hi"}]}\n',
            "messages",
            "line 1, field 'messages': conversation has no assistant turn",
        ),
        ('{"messages": [{"role": "robot", "content": "hi"}]}\n', "messages[0].role", "unknown role 'robot'"),
        ('{"text": "just text"}\n', None, "unknown record format (keys: text)"),
        ('{"messages": [], "prompt": "p", "completion": "c"}\n', None, "ambiguous record"),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path, content, field, message):
    p = write(tmp_path, "bad.jsonl", content)
    with pytest.raises(DataError) as err:
        load_examples(p)
    assert str(p) in str(err.value) and message in str(err.value)
    assert err.value.field == field


def test_invalid_utf8_names_the_line(tmp_path):
    p = write(
        tmp_path, "bad.jsonl", b'{"prompt": "a", "completion": "b"}\n{"prompt": "\xff", "completion": "b"}\n', "wb"
    )
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: invalid UTF-8"):
        load_examples(p)
    q = write(
        tmp_path, "bad.json", b'[\n{"prompt": "a", "completion": "b"},\n{"prompt": "\xff", "completion": "b"}]', "wb"
    )
    with pytest.raises(DataError, match=r"bad.json, line 3: invalid UTF-8"):
        load_examples(q)


def test_skip_mode_counts_and_keeps_the_rest(tmp_path):
    lines = [json.dumps(ALPACA[0]), "{oops", json.dumps({"instruction": "a", "output": ""}), json.dumps(ALPACA[1])]
    res = load_examples(write(tmp_path, "mixed.jsonl", "\n".join(lines)), on_error="skip")
    assert len(res.examples) == 2
    assert [e.location.index for e in res.skipped] == [2, 3]
    assert "2 bad records skipped" in res.summary()


def test_nothing_usable_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no usable examples"):
        load_examples(write(tmp_path, "e.jsonl", "{oops\n"), on_error="skip")
    with pytest.raises(DataError, match="file not found"):
        load_examples(tmp_path / "missing.json")
