"""`witune inspect` and `witune score` end to end, on made-up files (tiny model) and real files (SmolLM2)."""

import json

import pytest
import torch
import torch.nn.functional as F

from witune.cli.main import main

RECORDS = [
    {"instruction": "Add the numbers.", "input": "2 3", "output": "5"},
    {"instruction": "Reverse the word.", "input": "stone", "output": "enots"},
    {"instruction": "Name a colour.", "input": "", "output": "Blue is a colour of the sky and the sea."},
]


@pytest.fixture
def alpaca_file(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    return p


def test_inspect_json_gives_ids_weights_roles(alpaca_file, tiny_model_dir, tiny_tokenizer, tmp_path, capsys):
    out = tmp_path / "inspect.jsonl"
    assert (
        main(
            ["inspect", str(alpaca_file), "--model", str(tiny_model_dir), "--prompt-weight", "0.2", "--json", str(out)]
        )
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3
    for rec, row in zip(RECORDS, rows):
        assert len(row["input_ids"]) == len(row["weights"]) == len(row["roles"])
        resp = [t for t, r in zip(row["input_ids"], row["roles"]) if r == "assistant/response"]
        assert tiny_tokenizer.decode(resp) == rec["output"] + tiny_tokenizer.eos_token
        assert {w for w, r in zip(row["weights"], row["roles"]) if r == "assistant/response"} == {1.0}
        assert set(row["weights"][1 : len(row["weights"]) - len(resp)]) == {0.2}


def test_inspect_prints_coloured_tokens(alpaca_file, tiny_model_dir, capsys):
    assert main(["inspect", str(alpaca_file), "--model", str(tiny_model_dir), "--show", "1"]) == 0
    out = capsys.readouterr().out
    assert "legend" in out and "### Instruction:" in out and "trainable" in out


def test_score_matches_per_sample_reference(alpaca_file, tiny_model_dir, tiny_model, tiny_tokenizer, tmp_path):
    out = tmp_path / "score.json"
    assert (
        main(
            [
                "score",
                str(alpaca_file),
                "--model",
                str(tiny_model_dir),
                "--prompt-weight",
                "0.2",
                "--batch-size",
                "2",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    got = json.loads(out.read_text())
    # Independent reference: one sample at a time, full-precision CE, WIT normaliser by definition.
    from witune.data import RoleWeights, load_examples, render

    total, nonzero, resp_nll, resp_tokens = 0.0, 0, 0.0, 0
    for ex in load_examples(alpaca_file).examples:
        row = render(ex, tiny_tokenizer, RoleWeights(0.2, 1.0))
        ids = torch.tensor([row.input_ids])
        with torch.no_grad():
            logits = tiny_model(input_ids=ids).logits[0, :-1]
        nll = F.cross_entropy(logits.double(), ids[0, 1:], reduction="none")
        w = torch.tensor(row.weights[1:], dtype=torch.double)
        total += float((nll * w).sum())
        nonzero += int((w != 0).sum())
        resp = torch.tensor(row.response[1:])
        resp_nll += float(nll[resp].sum())
        resp_tokens += int(resp.sum())
    assert got["normalizer"] == nonzero
    assert got["loss"] == pytest.approx(total / nonzero, rel=1e-5)
    assert got["response_nll"] == pytest.approx(resp_nll, rel=1e-5) and got["response_tokens"] == resp_tokens


def test_bad_input_is_one_line_error(tmp_path, tiny_model_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(RECORDS[0]) + "\n" + '{"instruction": "x", "output": ""}\n')
    assert main(["inspect", str(bad), "--model", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl, line 2, field 'output': empty response" in " ".join(err.split())
    assert "Traceback" not in err
    assert main(["inspect", str(bad), "--model", str(tiny_model_dir), "--skip-bad", "--json", str(tmp_path / "o")]) == 0
    assert "1 bad records skipped" in " ".join(capsys.readouterr().err.split())
    assert (
        main(["score", str(bad), "--model", str(tiny_model_dir), "--prompt-weight", "0", "--response-weight", "0"]) == 2
    )
    assert "both zero" in capsys.readouterr().err


@pytest.mark.slow
def test_inspect_and_score_every_shared_training_file(shared_data, smollm2_dir, tmp_path):
    files = sorted((shared_data / "train").iterdir())
    assert files, "no training files"
    for f in files:
        out = tmp_path / f"{f.stem}.json"
        assert (
            main(
                [
                    "inspect",
                    str(f),
                    "--model",
                    str(smollm2_dir),
                    "--limit",
                    "16",
                    "--max-length",
                    "512",
                    "--json",
                    str(tmp_path / f"{f.stem}.inspect.jsonl"),
                ]
            )
            == 0
        ), f
        assert (
            main(
                [
                    "score",
                    str(f),
                    "--model",
                    str(smollm2_dir),
                    "--limit",
                    "4",
                    "--max-length",
                    "256",
                    "--prompt-weight",
                    "0.1",
                    "--json",
                    str(out),
                ]
            )
            == 0
        ), f
        got = json.loads(out.read_text())
        # A real pretrained instruct model: response perplexity well below vocabulary-sized chance.
        assert 1.0 < got["response_perplexity"] < 1000, (f, got)
        assert got["normalizer"] == got["prompt_tokens"] + got["response_tokens"], f


def test_inspect_stats_and_score_carry_every_static_weight(tiny_model_dir, tiny_tokenizer, tmp_path, capsys):
    """Message, sample and span weights reach `inspect` (final weight per token, span per token, legend),
    `stats` (tokens and weight per role and span) and `score` (the weighted loss); a span kind that never occurs
    is a warning with counts."""
    msgs = [
        {"role": "user", "content": "Add 2 and 3.", "weight": 0.5},
        {"role": "assistant", "content": "<think>2 + 3 = 5</think> The sum is 5.", "loss_weight": 2.0},
    ]
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": msgs, "sample_weight": 0.5}) + "\n")
    args = ["--model", str(tiny_model_dir), "--prompt-weight", "0.2", "--span-weight", "think=0.25"]
    out = tmp_path / "rows.jsonl"
    assert main(["inspect", str(data), *args, "--json", str(out)]) == 0
    row = json.loads(out.read_text())
    think = [t for t, s in zip(row["input_ids"], row["spans"]) if s == "think"]
    assert tiny_tokenizer.decode(think) == "<think>2 + 3 = 5</think>"
    assert {round(w, 9) for w, s in zip(row["weights"], row["spans"]) if s == "think"} == {0.25}  # 1 x 2 x .25 x .5
    assert {round(w, 9) for w, r in zip(row["weights"], row["roles"]) if r == "user"} == {0.05}  # 0.2 x 0.5 x 0.5
    assert main(["inspect", str(data), *args]) == 0
    assert "span think x0.25" in capsys.readouterr().out
    stats = tmp_path / "stats.json"
    assert main(["stats", str(data), *args, "--logprob-samples", "0", "--json", str(stats)]) == 0
    trained = json.loads(stats.read_text())["trained"]
    assert trained["tokens"]["span think"] == len(think)
    assert trained["weight_sum"]["span think"] == pytest.approx(len(think) * 0.25)
    assert main(["score", str(data), *args, "--span-weight", "tool_call=0.5", "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert "span weight tool_call=0.5: no <tool_call>...</tool_call> span in any of the 1 rows" in captured.err
    assert json.loads(captured.out)["weighted_sum"] > 0
