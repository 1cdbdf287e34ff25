"""Greedy generation, exact match / BLEU, memorisation, built-ins and the `witune eval` CLI."""

from __future__ import annotations

import argparse
import json

import pytest

from witune.data import Example, Location, Message
from witune.eval import generation as gen


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from witune.models.tiny import make_tiny_model

    path = make_tiny_model(tmp_path_factory.mktemp("tiny"))
    return str(path), AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_batched_left_padded_generation_equals_one_by_one(tiny):
    _, model, tok = tiny
    side = tok.padding_side
    prompts = [gen.format_prompt(tok, q) for q in ("Hi", "The cat likes a long letter every morning.", "Why?")]
    batched = gen.generate_greedy(model, tok, prompts, max_new_tokens=12, batch_size=3)
    single = [gen.generate_greedy(model, tok, [p], max_new_tokens=12)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(0 <= g.num_tokens <= 12 for g in batched)
    assert tok.padding_side == side  # the caller's tokenizer setting is restored


def test_metrics():
    assert gen.exact_match([" Paris ", "x"], ["paris", "y"])[0] == 0.5
    assert gen.corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert gen.corpus_bleu(["a b c d"], ["w x y z"]) == 0.0
    mean, se = gen.mean_and_stderr([1, 2, 3, 4])
    assert mean == 2.5 and se == pytest.approx((5 / 3) ** 0.5 / 2)
    with pytest.raises(ValueError, match="2 predictions but 1"):
        gen.exact_match(["a", "b"], ["a"])


def test_sampling_is_seeded_and_unique():
    pairs = [(f"p{i % 5}", f"c{i}") for i in range(20)]  # 5 unique prompts, duplicates keep c0..c4
    a, b = gen.sample_unique_prompts(pairs, 3, seed=1), gen.sample_unique_prompts(pairs, 3, seed=1)
    assert a == b and len({p for p, _ in a}) == 3
    assert all(c == f"c{int(p[1:])}" for p, c in a)
    assert len(gen.sample_unique_prompts(pairs, 100)) == 5


def _examples(n):
    return [
        Example(
            messages=(Message("user", f"Say number {i}."), Message("assistant", f"Number {i} here.")),
            format="messages",
            location=Location("mem.jsonl", i + 1, "line"),
        )
        for i in range(n)
    ]


def test_memorization_bleu_against_training_completions(tiny):
    _, model, tok = tiny
    pairs = gen.training_prompts(_examples(6), tok)
    assert pairs[0][0].endswith("<|im_start|>assistant\n") and pairs[0][1] == "Number 0 here."
    bleu, n = gen.memorization_bleu(model, tok, pairs, n=4, seed=0, max_new_tokens=8)
    assert n == 4 and 0.0 <= bleu <= 100.0
    # A model that reproduced its training completions would score 100: check the scorer on that case.
    assert gen.corpus_bleu([c for _, c in pairs], [c for _, c in pairs]) == pytest.approx(100.0)


def test_evaluate_builtins_and_cli(tiny, tmp_path, capsys):
    path, _, _ = tiny
    data = tmp_path / "train.jsonl"
    data.write_text(
        "".join(
            json.dumps({"instruction": f"Say number {i}.", "input": "", "output": f"Number {i} here."}) + "\n"
            for i in range(5)
        )
    )
    from witune.cli import eval as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    out = tmp_path / "res.json"
    args = parser.parse_args(
        [
            "eval",
            path,
            "--tasks",
            f"witune:memorization={data},witune:generation={data},witune:generation_length={data}",
            "--limit",
            "3",
            "--max-new-tokens",
            "6",
            "--json",
            str(out),
        ]
    )
    assert args.func(args) == 0
    rows = json.loads(out.read_text())["results"]
    got = {(r["task"].split("=")[0], r["metric"]) for r in rows}
    assert got == {
        ("witune:memorization", "bleu"),
        ("witune:memorization", "n_prompts"),
        ("witune:generation", "exact_match"),
        ("witune:generation", "bleu"),
        ("witune:generation_length", "mean_tokens"),
    }
    length = next(r for r in rows if r["metric"] == "mean_tokens")
    assert 0 <= length["value"] <= 6 and length["higher_is_better"] is False
    assert "witune eval" in capsys.readouterr().out  # the rich table title

    bad = parser.parse_args(["eval", path, "--tasks", "witune:nope"])
    assert bad.func(bad) == 2
    assert "unknown built-in evaluation 'witune:nope'" in capsys.readouterr().err


def _trained_copy(tmp_path, template: str, data: str | None = None):
    """A tiny model laid out as `witune train` leaves it: out/model + out/config.yaml naming the template."""
    from transformers import AutoTokenizer

    from witune.models.tiny import make_tiny_model

    model = make_tiny_model(tmp_path / "run" / "model")
    cfg = {"template": template, **({"data": data} if data else {})}
    (tmp_path / "run" / "config.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    return model, AutoTokenizer.from_pretrained(model)


@pytest.mark.parametrize("template", ["alpaca", "plain", "auto"])
def test_prompts_use_the_template_the_model_was_trained_with(tmp_path, template):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"instruction": "Add.", "input": "", "output": "3"}) + "\n")
    model, tok = _trained_copy(tmp_path, template, str(data))
    assert tok.chat_template  # the tiny tokenizer has one: it must NOT be used for an alpaca/plain-trained model
    assert gen.trained_template(model) == ("alpaca" if template == "auto" else template)
    prompt = gen.format_prompt(tok, "Name a colour.")
    ex = Example(
        (Message("user", "Name a colour."), Message("assistant", "x")),
        "alpaca" if template != "plain" else "messages",
        Location("<p>", 1),
        {"instruction": "Name a colour.", "input": ""},
    )
    from witune.data import render_segments

    segs = render_segments(ex, tok, "plain" if template == "plain" else "alpaca", final_turn_only=True)
    assert prompt == "".join(s.text for s in segs[:-1])  # exactly the training rendering up to the response
    if template != "plain":
        assert prompt.endswith("### Instruction:\nName a colour.\n\n### Response:")  # Stanford: no newline
    else:
        assert "### Response" not in prompt and prompt.endswith("Name a colour.")
    # the judge reads its verdict after the same rendering
    from witune.eval.judge import LocalJudge

    judge = LocalJudge.from_pretrained(model)
    msgs = [{"role": "user", "content": "Name a colour."}]
    assert judge._prompt_ids(msgs) == judge.tokenizer(prompt, add_special_tokens=False)["input_ids"]


def test_prompts_without_a_training_config_use_the_chat_template(tiny):
    path, _, tok = tiny
    assert gen.trained_template(path) is None
    prompt = gen.format_prompt(tok, "Hi")
    assert prompt == tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert gen.format_prompt(tok, "Hi", template="alpaca").endswith("### Response:")
