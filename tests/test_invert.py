"""`witune invert`: the PLW paper's prompt inversion on real shared files, with Rg recomputed independently."""

import argparse
import json
import re
from pathlib import Path

import pytest
from shared import SHARED_DATA, shared_file

from witune.data import DataError
from witune.stats import INSTRUCTION_NO_INPUT, INSTRUCTION_WITH_INPUT, invert, read_alpaca


def subset(name: str, n: int, tmp_path: Path) -> Path:
    """The first n records of a real file, in a temporary file (never in the repository)."""
    out = tmp_path / name
    out.write_text(json.dumps(json.loads(shared_file(name).read_text())[:n]))
    return out


def counts(tiny_tokenizer, rec):
    n = lambda s: len(tiny_tokenizer.encode(s, add_special_tokens=False))  # noqa: E731
    return n(rec["instruction"]) + n(rec["input"]), n(rec["output"])


def ratio_of_means(tiny_tokenizer, records):
    pc = [counts(tiny_tokenizer, r) for r in records]
    return sum(c for _, c in pc) / sum(p for p, _ in pc)


def test_instruction_strings_are_the_papers():
    seeds = sorted((SHARED_DATA.parent / "seeds").glob("004_*.txt"))
    if not seeds:
        pytest.skip("PLW paper text (shared/seeds/004_*.txt) is absent")
    text = re.sub(r"\s+", " ", seeds[0].read_text())
    assert f"“{INSTRUCTION_NO_INPUT}”" in text
    assert INSTRUCTION_WITH_INPUT.startswith(
        "Predict the prompt that generated the below AI output given the following"
    )
    # The paper's second string is split by a page break after "following"; its tail reads:
    assert "context. Context: <original_input>”" in text
    assert INSTRUCTION_WITH_INPUT.endswith(" context. Context: ")


def test_invert_all_long_completion_samples(tiny_tokenizer, tiny_model_dir, tmp_path):
    from witune.cli import invert as cli

    src = subset("gpteacher_roleplay_deduped.json", 300, tmp_path)
    original = json.loads(src.read_text())
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    out = tmp_path / "short.json"
    args = parser.parse_args(["invert", str(src), "-o", str(out), "--model", str(tiny_model_dir)])
    assert args.func(args) == 0
    new = json.loads(out.read_text())
    assert len(new) == len(original)
    n_inverted = 0
    for old, rec in zip(original, new):
        p, c = counts(tiny_tokenizer, old)
        if c >= p:  # long-completion sample: inverted exactly as the paper says
            n_inverted += 1
            expected = (INSTRUCTION_WITH_INPUT + old["input"]) if old["input"].strip() else INSTRUCTION_NO_INPUT
            assert rec == {"instruction": expected, "input": old["output"], "output": old["instruction"]}
        else:
            assert rec == old
    assert 0 < n_inverted < len(original)
    assert ratio_of_means(tiny_tokenizer, new) < 1 < ratio_of_means(tiny_tokenizer, original)


@pytest.mark.parametrize("target", [1.0, 0.8])
def test_target_rg_is_reached_deterministically(tiny_tokenizer, tmp_path, target):
    src = subset("gsm8k_train_alpaca.json", 200, tmp_path)
    records = read_alpaca(src)
    result = invert(records, tiny_tokenizer, target_rg=target, seed=3)
    again = invert(records, tiny_tokenizer, target_rg=target, seed=3)
    assert result.records == again.records  # same seed, same data set
    reached = ratio_of_means(tiny_tokenizer, result.records)  # recomputed from the written records
    assert reached == pytest.approx(result.rg_after["ratio_of_means"])
    assert abs(reached - target) < 0.02 * target
    assert result.rg_before["ratio_of_means"] == pytest.approx(
        ratio_of_means(tiny_tokenizer, [r.record for r in records])
    )
    other = invert(records, tiny_tokenizer, target_rg=target, seed=4)
    assert other.inverted != result.inverted  # the seed picks which samples


def test_unreachable_target_gets_closest(tiny_tokenizer, tmp_path):
    """GSM8K questions are long, so inverted samples keep Rg around 0.6: 0.05 cannot be reached."""
    records = read_alpaca(subset("gsm8k_train_alpaca.json", 200, tmp_path))
    result = invert(records, tiny_tokenizer, target_rg=0.05)
    assert result.inverted and len(result.inverted) <= result.candidates
    assert result.rg_after["ratio_of_means"] > 0.05
    assert not result.reached


def test_non_alpaca_data_is_a_clear_error(tiny_tokenizer):
    path = shared_file("fastchat_dummy_conversation_sharegpt.json")
    with pytest.raises(DataError, match=r"record 1: this command needs Alpaca records .* sharegpt"):
        read_alpaca(path)


def test_reachable_range_is_the_exact_extreme(tiny_tokenizer, tmp_path):
    """Dinkelbach's extreme against brute force over every subset of 12 samples (4096 data sets)."""
    import itertools

    from witune.stats.invert import invert_record

    records = read_alpaca(subset("gsm8k_train_alpaca.json", 12, tmp_path))
    result = invert(records, tiny_tokenizer, target_rg=0.01)
    base = [r.record for r in records]
    inverted = [invert_record(r) for r in base]
    before, after = [counts(tiny_tokenizer, r) for r in base], [counts(tiny_tokenizer, r) for r in inverted]
    values = []
    for pick in itertools.product((0, 1), repeat=12):  # token counts add up, so sums stand for re-tokenizing
        pc = [after[i] if x else before[i] for i, x in enumerate(pick)]
        values.append(sum(c for _, c in pc) / sum(p for p, _ in pc))
    assert result.reachable[0] == pytest.approx(min(values))
    assert result.reachable[1] == pytest.approx(max(values))
    assert result.reachable[0] <= result.rg_after["ratio_of_means"]
    assert values[0] == pytest.approx(result.rg_before["ratio_of_means"])


def test_cli_unreachable_target_exits_nonzero_with_the_minimum(tiny_model_dir, tmp_path, capsys):
    from witune.cli import invert as cli

    src = subset("gsm8k_train_alpaca.json", 100, tmp_path)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    out = tmp_path / "out.jsonl"
    args = parser.parse_args(
        ["invert", str(src), "-o", str(out), "--target-rg", "0.05", "--model", str(tiny_model_dir)]
    )
    assert args.func(args) == 1
    err = capsys.readouterr().err
    from transformers import AutoTokenizer

    expected = invert(read_alpaca(src), AutoTokenizer.from_pretrained(tiny_model_dir), target_rg=0.05).reachable[0]
    assert "cannot be reached" in err and f"reachable minimum is {expected:.4g}" in " ".join(err.split())
    assert not out.exists()  # nothing written
    args = parser.parse_args(["invert", str(src), "-o", str(out), "--target-rg", "1.0", "--model", str(tiny_model_dir)])
    assert args.func(args) == 0 and out.exists()
