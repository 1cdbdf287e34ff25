"""Preference pairs from instruction data, self-play style (SPIN, Chen et al. 2024): the reference answer
of each record is *chosen*, the model's own greedy answer to the same prompt is *rejected*.

This is a stand-in for a human preference set (UltraFeedback and the like) that needs no network and no
judge: it only asks DPO to move the model from what it says towards what the data says. The prompt is
rendered exactly as `witune train` rendered it (same template), so the pairs are plain-text pairs whose
prompt is what the SFT model saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from witune.atomic import atomic_open, check_output
from witune.errors import check_counts


@dataclass
class PairsResult:
    path: Path
    written: int
    same: int  # records skipped because the model already answered exactly the reference
    empty: int  # records skipped because the model answered nothing


def make_pairs(
    data: str,
    model: str,
    out: str | Path,
    limit: int | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    template: str = "auto",
    format: str = "auto",
    progress: bool = True,
    force: bool = False,
) -> PairsResult:
    """Write `out` (JSONL: prompt, chosen, rejected) from the records of `data` and generations of `model`.

    `out` is checked before anything is loaded or generated: never the input (same path, a link to it, the
    same inode), and an existing file (or link) only with `force`."""
    # `dpo-pairs D -o D` once replaced the user's 22 records with the 2 pairs generated from them.
    out = check_output(out, [data, model], force)
    check_counts(allow_none=True, limit=limit, max_new_tokens=max_new_tokens, batch_size=batch_size)
    import torch

    from witune.data import load_examples
    from witune.dpo.model import load_start_model, load_start_tokenizer
    from witune.eval.generation import generate_greedy, normalize_answer, training_prompts

    examples = load_examples(data, format=format, limit=limit).examples
    tok = load_start_tokenizer(model)
    lm = load_start_model(model, dtype=torch.float32).eval()
    prompts = training_prompts(examples, tok, template=template)
    gens = generate_greedy(
        lm, tok, [p for p, _ in prompts], max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress
    )
    written = same = empty = 0
    with atomic_open(out, "w") as f:  # a reader never sees half a file; a failure keeps the old one
        for (prompt, reference), g in zip(prompts, gens):
            if not g.text.strip():
                empty += 1
                continue
            if normalize_answer(g.text) == normalize_answer(reference):
                same += 1
                continue
            f.write(json.dumps({"prompt": prompt, "chosen": reference, "rejected": g.text}, ensure_ascii=False) + "\n")
            written += 1
    return PairsResult(out, written, same, empty)
