"""The WIT paper's prompt characteristics (Chatterjee, Renduchintala et al., "On the Effect of Instruction Tuning
Loss on Generalization", TACL; its blog post's "Some Hints for Future Research"): lexical diversity of the
prompts (n-gram diversity), their syntactic complexity (mean dependency-parse depth) and the model's average
next-token log-probability of prompt tokens.

Each is computed on the same deterministic sample of at most ``max_samples`` prompts (seeded), so values from
data sets of different sizes are comparable: corpus-level distinct-n falls as a corpus grows.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

_WORD = re.compile(r"\w+|[^\w\s]")


def sample_prompts(prompts: Sequence[str], max_samples: int, seed: int = 0) -> list[str]:
    """A fixed random subset (all of them if there are at most ``max_samples``), in the original order."""
    if len(prompts) <= max_samples:
        return list(prompts)
    keep = sorted(random.Random(seed).sample(range(len(prompts)), max_samples))
    return [prompts[i] for i in keep]


def distinct_n(prompts: Sequence[str], n: int) -> float:
    """Unique word n-grams / all word n-grams over the prompts (lower-cased words and punctuation marks)."""
    total, seen = 0, set()
    for p in prompts:
        words = _WORD.findall(p.lower())
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def ngram_diversity(prompts: Sequence[str], max_n: int = 4) -> dict[str, float]:
    """distinct-1..max_n and their mean (reported as the n-gram diversity).

    >>> d = ngram_diversity(["a b a b", "a b c"], max_n=2)
    >>> d["distinct_1"], d["distinct_2"]
    (0.42857142857142855, 0.6)
    """
    out = {f"distinct_{n}": distinct_n(prompts, n) for n in range(1, max_n + 1)}
    out["mean"] = sum(out.values()) / max_n
    return out


@dataclass(frozen=True)
class ParseDepth:
    """Mean dependency-parse depth, or why it is not available (never an invented value)."""

    value: float | None
    reason: str  # the parser used, or why there is none


def _depth(token) -> int:
    depth = 0
    while token.head is not token:
        token = token.head
        depth += 1
    return depth


def parse_depth(prompts: Sequence[str], model: str = "en_core_web_sm") -> ParseDepth:
    """Mean over prompts of the deepest token's distance to its sentence root (spaCy), if a parser is installed."""
    try:
        import spacy
    except ImportError:
        return ParseDepth(None, "not available: spaCy is not installed")
    try:
        nlp = spacy.load(model, disable=["ner", "lemmatizer"])
    except OSError:
        return ParseDepth(None, f"not available: spaCy model {model!r} is not installed (it is not on PyPI)")
    depths = []
    for doc in nlp.pipe(prompts, batch_size=64):
        if len(doc):
            depths.append(max(_depth(t) for t in doc))
    if not depths:
        return ParseDepth(None, "not available: no non-empty prompts")
    return ParseDepth(sum(depths) / len(depths), f"spaCy {model}, {len(depths)} prompts")


def prompt_logprob(
    prompts: Sequence[str], model, tokenizer, batch_size: int = 8, max_tokens: int = 256, progress: bool = True
) -> float:
    """Average next-token log-probability of the prompt tokens under ``model`` (token-weighted mean, nats).

    Each prompt is truncated to ``max_tokens``. A BOS token is put in front when the tokenizer has one, so every
    prompt token is predicted; otherwise the first token has no context and is not scored.
    """
    import torch
    from tqdm import tqdm

    from witune.models.load import pad_token_id
    from witune.models.logprob import next_token_logprobs

    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    ids = [bos + x[:max_tokens] for x in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    ids = [x for x in ids if len(x) >= 2]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together: less padding
    pad = pad_token_id(tokenizer) or 0  # padded positions are masked: any id serves
    device = next(model.parameters()).device
    total, count = 0.0, 0
    model.eval()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc="prompt log-prob", disable=not progress, leave=False):
        width = max(len(ids[i]) for i in batch)
        x = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            x[row, : len(ids[i])] = torch.tensor(ids[i])
            mask[row, : len(ids[i])] = 1
        x, mask = x.to(device), mask.to(device)
        with torch.no_grad():
            logits = model(input_ids=x, attention_mask=mask).logits.float()
        logp = next_token_logprobs(logits, x)
        valid = mask[:, 1:].bool()
        total += logp[valid].sum().item()
        count += int(valid.sum())
    return total / count if count else float("nan")
