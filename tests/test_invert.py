"""`witune invert`: the PLW paper's prompt inversion on real shared files, with Rg recomputed independently."""

import argparse
import json
import re
from pathlib import Path

import pytest

from witune.data import DataError
from witune.stats import INSTRUCTION_NO_INPUT, INSTRUCTION_WITH_INPUT, invert, read_alpaca

ROOT = Path(__file__).resolve().parents[2] / "shared"
TRAIN = ROOT / "data" / "train"


def shared_file(name: str) -> Path:
    path = TRAIN / name
    if not path.is_file():
        pytest.skip(f"shared data file {path} is absent (the tests use the real files in ../shared/data/train)")
    return path


@pytest.fixture(scope="module")
def tiny_dir(request, tmp_path_factory):
    """The shared conftest fixture when there is one (built once per session), else a module-local tiny model."""
    try:
        return request.getfixturevalue("tiny_model_dir")
    except pytest.FixtureLookupError:
        from witune.models.tiny import make_tiny_model

        return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tok(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


def subset(name: str, n: int, tmp_path: Path) -> Path:
    """The first n records of a real file, in a temporary file (never in the repository)."""
    out = tmp_path / name
    out.write_text(json.dumps(json.loads(shared_file(name).read_text())[:n]))
    return out


def counts(tok, rec):
    n = lambda s: len(tok.encode(s, add_special_tokens=False))  # noqa: E731
    return n(rec["instruction"]) + n(rec["input"]), n(rec["output"])


def ratio_of_means(tok, records):
    pc = [counts(tok, r) for r in records]
    return sum(c for _, c in pc) / sum(p for p, _ in pc)


def test_instruction_strings_are_the_papers():
    seeds = sorted((ROOT / "seeds").glob("004_*.txt"))
    if not seeds:
        pytest.skip("PLW paper text (shared/seeds/004_*.txt) is absent")
    text = re.sub(r"\s+", " ", seeds[0].read_text())
    assert f"“{INSTRUCTION_NO_INPUT}”" in text
    assert INSTRUCTION_WITH_INPUT.startswith("Predict the prompt that generated the below AI output given the following")
    # The paper's second string is split by a page break after "following"; its tail reads:
    assert "context. Context: <original_input>”" in text
    assert INSTRUCTION_WITH_INPUT.endswith(" context. Context: ")


def test_invert_all_long_completion_samples(tok, tiny_dir, tmp_path):
    from witune.cli import invert as cli

    src = subset("gpteacher_roleplay_deduped.json", 300, tmp_path)
    original = json.loads(src.read_text())
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    out = tmp_path / "short.json"
    args = parser.parse_args(["invert", str(src), "-o", str(out), "--model", str(tiny_dir)])
    assert args.func(args) == 0
    new = json.loads(out.read_text())
    assert len(new) == len(original)
    n_inverted = 0
    for old, rec in zip(original, new):
        p, c = counts(tok, old)
        if c >= p:  # long-completion sample: inverted exactly as the paper says
            n_inverted += 1
            expected = (INSTRUCTION_WITH_INPUT + old["input"]) if old["input"].strip() else INSTRUCTION_NO_INPUT
            assert rec == {"instruction": expected, "input": old["output"], "output": old["instruction"]}
        else:
            assert rec == old
    assert 0 < n_inverted < len(original)
    assert ratio_of_means(tok, new) < 1 < ratio_of_means(tok, original)


@pytest.mark.parametrize("target", [1.0, 0.8])
def test_target_rg_is_reached_deterministically(tok, tmp_path, target):
    src = subset("gsm8k_train_alpaca.json", 200, tmp_path)
    records = read_alpaca(src)
    result = invert(records, tok, target_rg=target, seed=3)
    again = invert(records, tok, target_rg=target, seed=3)
    assert result.records == again.records  # same seed, same data set
    reached = ratio_of_means(tok, result.records)  # recomputed from the written records
    assert reached == pytest.approx(result.rg_after["ratio_of_means"])
    assert abs(reached - target) < 0.02 * target
    assert result.rg_before["ratio_of_means"] == pytest.approx(ratio_of_means(tok, [r.record for r in records]))
    other = invert(records, tok, target_rg=target, seed=4)
    assert other.inverted != result.inverted  # the seed picks which samples


def test_unreachable_target_gets_closest(tok, tmp_path):
    """GSM8K questions are long, so inverted samples keep Rg around 0.6: 0.05 cannot be reached."""
    records = read_alpaca(subset("gsm8k_train_alpaca.json", 200, tmp_path))
    result = invert(records, tok, target_rg=0.05)
    assert result.inverted and len(result.inverted) <= result.candidates
    assert result.rg_after["ratio_of_means"] > 0.05
    assert not result.reached


def test_non_alpaca_data_is_a_clear_error(tok):
    path = shared_file("fastchat_dummy_conversation_sharegpt.json")
    with pytest.raises(DataError, match=r"record 1: this command needs Alpaca records .* sharegpt"):
        read_alpaca(path)
