"""Every Python block of README.md runs, so the README cannot rot: each block is extracted and executed with a
tiny local model and real records standing in for the names it takes as given.

The names a block may use without defining them are exactly the keys of `_given` below (the README says so
next to its blocks); anything else must be imported or defined by the block itself, so a missing import is a
NameError here. "data.jsonl" in a block is replaced by a real local file. Blocks run in a temporary working
directory (they write "out/").
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from shared import SHARED_DATA, shared_file

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in _BLOCK.finditer(text)]


def _given(model_dir: Path) -> dict:
    """The stand-ins: a model and its tokenizer, a TRL prompt/completion data set, witune rows, and a batch."""
    import json

    import datasets
    import torch

    from witune.data import RoleWeights, alpaca_prompt, load_examples, pad_collate, tokenize_examples
    from witune.models import load_model, load_tokenizer

    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    records = json.loads(shared_file("gsm8k_train_alpaca.json").read_text())[:8]
    ds = datasets.Dataset.from_list(
        [{"prompt": alpaca_prompt(r["instruction"], r["input"]), "completion": r["output"]} for r in records]
    )
    examples = load_examples(shared_file("alpaca_seed_tasks.jsonl"), limit=4).examples
    rows = tokenize_examples(examples, tok, RoleWeights(0.1, 1.0), max_length=128).rows
    batch = pad_collate(rows, tok.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return {
        "model": model,
        "tok": tok,
        "ds": ds,
        "step_rows": [rows[:2], rows[2:]],
        "opt": torch.optim.SGD(model.parameters(), lr=1e-3),
        "logits": logits,
        "labels": batch["labels"],
        "weights": batch["weights"],
        "response_mask": batch["response_mask"],
        "Z": batch["weights"].ne(0).sum(),
    }


def test_readme_has_python_blocks():
    assert len(_blocks()) >= 4


def _cases() -> list:
    """One case per block; a block that loads SmolLM2 (a real chat template matters there) is a slow test."""
    return [
        pytest.param(line, code, id=f"README.md:{line}", marks=[pytest.mark.slow] if "smollm2" in code else [])
        for line, code in _blocks()
    ]


@pytest.mark.parametrize("line,code", _cases())
def test_readme_block_runs(line, code, tiny_model_dir, tmp_path, monkeypatch):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(shared_file("alpaca_seed_tasks.jsonl").read_text().splitlines(True)[:16]))
    monkeypatch.chdir(tmp_path)
    # README paths are relative to the repository root; the block runs in tmp_path
    source = code.replace('"data.jsonl"', repr(str(data))).replace('"../shared/data', f'"{SHARED_DATA}')
    exec(compile(source, f"README.md:{line}", "exec"), _given(tiny_model_dir))


def test_plain_pytorch_example_runs(tiny_model_dir):
    """examples/plain_pytorch_loop.py, which the README points to, runs on the tiny model and real records."""
    import subprocess
    import sys

    example = README.parent / "examples" / "plain_pytorch_loop.py"
    data = shared_file("alpaca_seed_tasks.jsonl")
    cmd = [sys.executable, str(example), str(data), "--model", str(tiny_model_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("weighted loss") == 4
