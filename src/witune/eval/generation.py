"""Greedy generation and the generation-based metrics the papers use.

- mean generation length (the PLW paper's AlpacaEval length analysis),
- exact match and sacrebleu BLEU against reference completions,
- memorisation: corpus BLEU-4 of greedy generations for sampled *training* prompts against their training
  completions (PLW paper, section 5: 10,000 unique prompts sampled from the training set).

Prompts are rendered with the template the model was *trained* with: the `template` field of the run's
config.yaml (next to or one level above the model folder, as `witune train` writes it), resolved from the
training data when it says "auto"; else the tokenizer's chat template when it has one; else Alpaca. Querying
an Alpaca-trained model through a chat template it never saw measures the template mismatch, not the model.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from witune.data.render import TEMPLATES
from witune.errors import ConfigError
from witune.yaml_io import load_yaml_file


@dataclass
class Generation:
    """One greedy generation: the formatted prompt, the decoded text and its length in tokens."""

    prompt: str
    text: str
    num_tokens: int


def trained_template(model_path: str | Path | None) -> str | None:
    """The template (alpaca, chat, plain) a witune-trained model was trained with, or None when unknown.

    Reads ``template`` from the run's config.yaml (in the model folder or its parent: `out/config.yaml` beside
    `out/model`); "auto" is resolved the way training resolved it, from the first record of the training data.
    """
    if not model_path:
        return None
    folder = Path(str(model_path))
    for cfg_file in (folder / "config.yaml", folder.parent / "config.yaml"):
        if not cfg_file.is_file():
            continue
        try:
            cfg = load_yaml_file(cfg_file) or {}
        except ConfigError:
            return None
        template = cfg.get("template") if isinstance(cfg, dict) else None
        if template in TEMPLATES and template != "auto":
            return template
        if template == "auto" and cfg.get("data"):
            try:
                from witune.data import load_examples
                from witune.data.render import resolve_template

                first = load_examples(cfg["data"], format=cfg.get("format", "auto"), limit=1).examples
                return resolve_template(first[0], "auto") if first else None
            except Exception:  # noqa: BLE001 - training data moved or unreadable: fall back below
                return None
        return None
    return None


def resolve_prompt_template(tokenizer, template: str | None = None) -> str:
    """The template to query with: the given one, else the trained one, else chat when present, else alpaca."""
    if template in (None, "auto"):
        template = trained_template(getattr(tokenizer, "name_or_path", None))
    if template in (None, "auto"):
        template = "chat" if getattr(tokenizer, "chat_template", None) else "alpaca"
    return template


def format_prompt(tokenizer, messages: Sequence[dict[str, str]] | str, template: str | None = None) -> str:
    """Turn a user message (or a list of chat messages ending before the answer) into the model's prompt.

    Rendered exactly as in training (``witune.data.render_segments``: BOS, template text, chat markers) with
    ``resolve_prompt_template``'s template, up to where the response starts.
    """
    from witune.data import Example, Location, Message, render_segments

    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    template = resolve_prompt_template(tokenizer, template)
    msgs = tuple(Message(m["role"], m["content"]) for m in messages) + (Message("assistant", "x"),)
    users = [m["content"] for m in messages if m["role"] == "user"]
    fields = {"instruction": users[-1] if users else "", "input": ""} if template == "alpaca" else {}
    example = Example(msgs, "alpaca" if template == "alpaca" else "messages", Location("<prompt>", 1), fields)
    segs = render_segments(example, tokenizer, template=template, final_turn_only=True)
    last = max(i for i, s in enumerate(segs) if s.role == "assistant")
    return "".join(s.text for s in segs[:last])


def generate_greedy(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 128,
    batch_size: int = 8,
    progress: bool = True,
) -> list[Generation]:
    """Greedy-decode each already formatted prompt; batched with *left* padding.

    Left padding keeps every prompt's last token at the same position, so the first generated token of
    each row is conditioned on its real prompt end (right padding would make padded rows continue padding).
    """
    import torch  # here: `witune.eval` (the evaluator registry the analysis reads) imports no torch

    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    from witune.models import pad_token_id

    pad_id = pad_token_id(tokenizer)
    device = next(model.parameters()).device
    out: list[Generation] = []
    with torch.no_grad():
        try:
            batches = range(0, len(prompts), batch_size)
            for start in tqdm(batches, desc="generating", disable=not progress or len(batches) < 2):
                chunk = list(prompts[start : start + batch_size])
                # The chat template already wrote BOS/special tokens into the text: do not add them twice.
                enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
                if pad_id is None:
                    raise ValueError("tokenizer has neither a pad token nor an EOS token; cannot batch prompts")
                gen = model.generate(
                    input_ids=enc["input_ids"].to(device),
                    attention_mask=enc["attention_mask"].to(device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=pad_id,
                )
                new = gen[:, enc["input_ids"].shape[1] :]
                for prompt, row in zip(chunk, new):
                    ids = _strip_after_eos(row.tolist(), tokenizer.eos_token_id, pad_id)
                    text = tokenizer.decode(ids, skip_special_tokens=True)
                    out.append(Generation(prompt=prompt, text=text, num_tokens=len(ids)))
        finally:
            tokenizer.padding_side = old_side
    return out


def _strip_after_eos(ids: list[int], eos_id: int | None, pad_id: int | None) -> list[int]:
    """Keep the tokens up to (not including) the first EOS; finished rows are padded by generate()."""
    for i, t in enumerate(ids):
        if t == eos_id or (eos_id is None and t == pad_id):
            return ids[:i]
    return ids


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and its standard error (sample std / sqrt(n)); stderr is None for fewer than 2 values."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to average")
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def normalize_answer(text: str) -> str:
    """Exact-match normalisation: strip, lower-case, collapse whitespace."""
    return " ".join(text.strip().lower().split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> tuple[float, float | None]:
    """Fraction of predictions equal to their reference after `normalize_answer`, with its stderr."""
    _check_lengths(predictions, references)
    hits = [float(normalize_answer(p) == normalize_answer(r)) for p, r in zip(predictions, references)]
    return mean_and_stderr(hits)


def corpus_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU-4 (default 13a tokenisation), one reference per prediction, 0-100 scale."""
    import sacrebleu

    _check_lengths(predictions, references)
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def _check_lengths(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


def sample_unique_prompts(pairs: Sequence[tuple[str, str]], n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Sample up to n (prompt, completion) pairs with *unique* prompts, reproducibly for a seed.

    Duplicated prompts keep their first completion, so a prompt is never scored against two targets.
    """
    first: dict[str, str] = {}
    for prompt, completion in pairs:
        first.setdefault(prompt, completion)
    unique = list(first.items())
    rng = random.Random(seed)
    return rng.sample(unique, min(n, len(unique)))


def memorization_bleu(
    model,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    n: int = 10_000,
    seed: int = 0,
    max_new_tokens: int = 128,
    batch_size: int = 8,
) -> tuple[float, int]:
    """PLW-paper memorisation: corpus BLEU of generations for n sampled training prompts vs. their completions.

    `pairs` holds (prompt exactly as the model saw it in training, training completion); see
    `training_prompts` for turning examples into such pairs. Returns (corpus BLEU, number of prompts used).
    """
    chosen = sample_unique_prompts(pairs, n, seed)
    gens = generate_greedy(
        model, tokenizer, [p for p, _ in chosen], max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    return corpus_bleu([g.text for g in gens], [c for _, c in chosen]), len(chosen)


def training_prompts(examples: Sequence, tokenizer, template: str | None = None) -> list[tuple[str, str]]:
    """(prompt text, completion) for each `witune.data.Example`, rendered with the *training* template.

    The prompt is every rendered segment before the last assistant turn (template text, BOS, chat markers
    included), so generation starts exactly where the training target started.
    """
    from witune.data import render_segments

    if template is None:  # the model's training template when known, else each record's own "auto" choice
        template = trained_template(getattr(tokenizer, "name_or_path", None)) or "auto"
    pairs = []
    for ex in examples:
        segs = render_segments(ex, tokenizer, template=template, final_turn_only=True)
        last = max(i for i, s in enumerate(segs) if s.role == "assistant")
        pairs.append(("".join(s.text for s in segs[:last]), ex.response_text))
    return pairs
