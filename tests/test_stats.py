"""`witune stats`: per-field lengths, Rg and prompt characteristics on the real shared files, checked against
plain-Python recomputations from the tokenizer."""

import argparse
import json
import math
import statistics

import pytest
import torch
from shared import shared_file

from witune.data import load_examples
from witune.stats import compute_stats
from witune.stats.prompts import parse_depth, prompt_logprob


def n_tokens(tiny_tokenizer, text: str) -> int:
    return len(tiny_tokenizer.encode(text, add_special_tokens=False))


def test_alpaca_fields_and_rg_match_independent_count(tiny_tokenizer):
    path = shared_file("gpteacher_roleplay_deduped.json")
    records = json.loads(path.read_text())[:200]
    stats = compute_stats(load_examples(path, limit=200).examples, tiny_tokenizer, max_samples=100)
    for field in ("instruction", "input", "output"):
        counts = [n_tokens(tiny_tokenizer, r[field]) for r in records]
        assert stats.fields[field].mean == pytest.approx(statistics.fmean(counts))
        assert stats.fields[field].std == pytest.approx(statistics.pstdev(counts))
        assert stats.fields[field].total == sum(counts)
    prompt = [n_tokens(tiny_tokenizer, r["instruction"]) + n_tokens(tiny_tokenizer, r["input"]) for r in records]
    completion = [n_tokens(tiny_tokenizer, r["output"]) for r in records]
    assert stats.samples == 200
    assert stats.total_tokens == sum(prompt) + sum(completion)
    assert stats.rg.ratio_of_means == pytest.approx(sum(completion) / sum(prompt))
    assert stats.rg.mean_of_ratios == pytest.approx(statistics.fmean(c / p for c, p in zip(completion, prompt)))
    assert stats.rg.median == pytest.approx(statistics.median(c / p for c, p in zip(completion, prompt)))
    assert stats.rg.short_fraction == pytest.approx(sum(c < p for c, p in zip(completion, prompt)) / 200)
    assert stats.prompt_logprob is None  # no model given: never invented


def test_multi_turn_roles(tiny_tokenizer):
    """LIMA records with a history and ShareGPT chats: prompt = every non-assistant turn."""
    path = shared_file("lima_alpaca_format.json")
    records = [r for r in json.loads(path.read_text()) if r.get("history")][:10]
    assert records, "the LIMA file has multi-turn records"
    examples = [ex for ex in load_examples(path).examples if len(ex.messages) > 2][:10]
    stats = compute_stats(examples, tiny_tokenizer, max_samples=10)
    user = [
        sum(n_tokens(tiny_tokenizer, u) for u, _ in r["history"])
        + n_tokens(tiny_tokenizer, r["instruction"])
        + n_tokens(tiny_tokenizer, r["input"])
        for r in records
    ]
    assistant = [
        sum(n_tokens(tiny_tokenizer, a) for _, a in r["history"]) + n_tokens(tiny_tokenizer, r["output"])
        for r in records
    ]
    assert stats.roles["user"].total == sum(user) == stats.prompt.total
    assert stats.roles["assistant"].total == sum(assistant) == stats.completion.total

    chat = shared_file("fastchat_dummy_conversation_sharegpt.json")
    raw = json.loads(chat.read_text())[:50]
    stats = compute_stats(load_examples(chat, limit=50).examples, tiny_tokenizer, max_samples=50)
    gpt = sum(n_tokens(tiny_tokenizer, t["value"]) for r in raw for t in r["conversations"] if t["from"] == "gpt")
    human = sum(n_tokens(tiny_tokenizer, t["value"]) for r in raw for t in r["conversations"] if t["from"] == "human")
    assert (stats.completion.total, stats.prompt.total) == (gpt, human)
    assert stats.rg.ratio_of_means == pytest.approx(gpt / human)


def test_parse_depth_is_never_invented():
    depth = parse_depth(["The cat sat on the mat."])
    try:
        import spacy

        spacy.load("en_core_web_sm")
    except (ImportError, OSError):
        assert depth.value is None and depth.reason.startswith("not available")
    else:
        assert depth.value is not None and depth.value >= 1


def test_prompt_logprob_matches_unbatched_forward(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = ["The cat likes a long letter today.", "Write a poem about the sea.", "1 + 2 = 3, 10 * 4 = 40.", "Hi"]
    got = prompt_logprob(prompts, model, tiny_tokenizer, batch_size=3, progress=False)
    total, count = 0.0, 0
    for p in prompts:  # one at a time: no padding involved
        ids = torch.tensor([[tiny_tokenizer.bos_token_id] + tiny_tokenizer.encode(p, add_special_tokens=False)])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        total += logp.gather(-1, ids[0, 1:, None]).sum().item()
        count += ids.shape[1] - 1
    assert got == pytest.approx(total / count, abs=1e-4)


def test_stats_cli_json_and_plots(tiny_model_dir, tmp_path):
    from witune.cli import stats as cli

    path = shared_file("gsm8k_train_alpaca.json")
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    out = tmp_path / "stats.json"
    args = parser.parse_args(
        [
            "stats",
            str(path),
            "--model",
            str(tiny_model_dir),
            "--limit",
            "200",
            "--logprob-samples",
            "8",
            "--json",
            str(out),
            "--plot",
            str(tmp_path / "plots"),
        ]
    )
    assert args.func(args) == 0
    data = json.loads(out.read_text())
    assert data["samples"] == 200
    assert data["fields"]["input"]["total"] == 0  # GSM8K inputs are all empty
    assert math.isfinite(data["prompt_logprob"]) and data["prompt_logprob"] < 0
    assert data["rg"]["kind"] in ("short-completion", "long-completion")
    for png in ("gsm8k_train_alpaca_lengths.png", "gsm8k_train_alpaca_rg.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_smollm2_seed_tasks_before_and_after_inversion(tmp_path):
    """Realistic: SmolLM2's tokenizer on the Self-Instruct seed tasks; inverting every long-completion sample
    leaves only short-completion samples, and stats of the written file agree with invert's own Rg."""
    from witune.data import ConfigError
    from witune.stats import invert, read_alpaca, write_records
    from witune.stats.loading import get_tokenizer

    path = shared_file("alpaca_seed_tasks.jsonl")
    try:
        tiny_tokenizer = get_tokenizer("smollm2")
    except ConfigError as e:
        pytest.skip(f"SmolLM2 is not available: {e}")
    raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    flat = [(r["instruction"], i["input"], i["output"]) for r in raw for i in r["instances"]]
    prompt = sum(n_tokens(tiny_tokenizer, a) + n_tokens(tiny_tokenizer, b) for a, b, _ in flat)
    completion = sum(n_tokens(tiny_tokenizer, c) for _, _, c in flat)
    before = compute_stats(load_examples(path).examples, tiny_tokenizer, max_samples=200)
    assert before.rg.ratio_of_means == pytest.approx(completion / prompt)

    result = invert(read_alpaca(path), tiny_tokenizer)
    out = write_records(result.records, tmp_path / "short.jsonl")
    after = compute_stats(load_examples(out).examples, tiny_tokenizer, max_samples=200)
    assert after.rg.short_fraction == 1.0
    assert after.rg.ratio_of_means == pytest.approx(result.rg_after["ratio_of_means"])
    assert after.rg.ratio_of_means < 1 < before.rg.ratio_of_means
