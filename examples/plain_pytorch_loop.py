"""witune's weighted loss in a hand-written PyTorch loop: tiny model, real data, gradient accumulation.

    PYTHONPATH=src python examples/plain_pytorch_loop.py [DATA] [--model DIR]

The normaliser Z is counted over every micro-batch of the optimizer step *before* any backward
(`normalizer_counts` needs labels and weights only), so the step does not depend on how it is split.
"""

import argparse
import tempfile
from pathlib import Path

import torch

from witune.data import RoleWeights, load_examples, pad_collate, tokenize_examples
from witune.loss import normalizer_counts, safe_divide, weighted_nll
from witune.models import load_model, load_tokenizer, make_tiny_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "alpaca_seed_tasks.jsonl"

p = argparse.ArgumentParser()
p.add_argument("data", nargs="?", default=str(DATA))
p.add_argument("--model", default=None, help="a model folder or hub name (default: a random tiny Llama)")
a = p.parse_args()
model_dir = a.model or make_tiny_model(Path(tempfile.mkdtemp()))
tok, model = load_tokenizer(model_dir), load_model(model_dir)
rows = tokenize_examples(
    load_examples(a.data, limit=32).examples, tok, RoleWeights(prompt=0.1, response=1.0), max_length=256
).rows
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

# --- the loop: 4 optimizer steps of 4 micro-batches of 2 samples ---
for step in range(4):
    micro = [pad_collate(rows[step * 8 + i : step * 8 + i + 2], tok.pad_token_id) for i in range(0, 8, 2)]
    counts = sum(normalizer_counts(b["labels"], b["weights"]) for b in micro)  # all-reduce it under DDP
    z = counts[0]  # [0] = nonzero (WIT); normalizer_from_counts(counts, "weight_sum") for the others
    step_loss = 0.0
    for b in micro:
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        sums = weighted_nll(logits, b["labels"], b["weights"], b["response_mask"])  # labels already shifted
        loss = safe_divide(sums.weighted_sum, z)  # x world size under DDP (it averages gradients)
        loss.backward()
        step_loss += loss.item()
    opt.step()
    opt.zero_grad()
    print(f"step {step + 1}: weighted loss {step_loss:.4f} (Z = {int(z)} tokens with non-zero weight)")
