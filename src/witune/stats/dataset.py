"""All statistics of one data set: the PLW paper's Table 1 row, Rg both ways, the WIT prompt characteristics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from witune.data.example import Example
from witune.stats.lengths import (
    RatioStats,
    SampleLengths,
    Summary,
    TrainedParts,
    ratio_stats,
    sample_lengths,
    summarize,
    trained_parts,
)
from witune.stats.prompts import ParseDepth, ngram_diversity, parse_depth, prompt_logprob, sample_prompts


@dataclass
class DatasetStats:
    source: str
    samples: int
    total_tokens: int  # every field / turn, no template (the paper's "Total Tokens")
    fields: dict[str, Summary]  # instruction, input, output (Alpaca) or prompt, completion
    roles: dict[str, Summary]  # system, user, assistant, tool (per sample, 0 where a role is absent)
    prompt: Summary  # instruction + input (or every non-assistant turn)
    completion: Summary
    rg: RatioStats
    ngram_diversity: dict[str, float]
    parse_depth: ParseDepth
    prompt_logprob: float | None  # nats per prompt token; None when no model was given
    characteristic_samples: int  # prompts used for diversity, parse depth and log-prob
    lengths: list[SampleLengths] = field(default_factory=list, repr=False)
    trained: TrainedParts | None = None  # the rendered rows (template, weights) when they were given

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("lengths")
        d["rg"]["kind"] = self.rg.kind
        return _finite(d)


def _finite(x):
    """JSON has no inf/nan: write them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def compute_stats(
    examples: Sequence[Example],
    tokenizer,
    source: str = "",
    model=None,
    max_samples: int = 1000,
    logprob_samples: int = 128,
    seed: int = 0,
    progress: bool = True,
    rows: Sequence | None = None,
) -> DatasetStats:
    """Statistics of ``examples`` with ``tokenizer``; the model's prompt log-prob only when ``model`` is given;
    the trained parts (tokens per role and span, Rg of what the loss sees) when the rendered ``rows`` are."""
    lengths = sample_lengths(examples, tokenizer)
    field_names = [
        f for f in ("instruction", "input", "output", "prompt", "completion") if any(f in s.fields for s in lengths)
    ]
    role_names = [r for r in ("system", "user", "assistant", "tool") if any(r in s.roles for s in lengths)]
    prompts = sample_prompts([ex.prompt_text for ex in examples], max_samples, seed)
    logprob = None
    if model is not None:
        logprob = prompt_logprob(sample_prompts(prompts, logprob_samples, seed), model, tokenizer, progress=progress)
    return DatasetStats(
        source=source,
        samples=len(lengths),
        total_tokens=sum(s.prompt + s.completion for s in lengths),
        fields={f: summarize([s.fields.get(f, 0) for s in lengths]) for f in field_names},
        roles={r: summarize([s.roles.get(r, 0) for s in lengths]) for r in role_names},
        prompt=summarize([s.prompt for s in lengths]),
        completion=summarize([s.completion for s in lengths]),
        rg=ratio_stats(lengths),
        ngram_diversity=ngram_diversity(prompts),
        parse_depth=parse_depth(prompts),
        prompt_logprob=logprob,
        characteristic_samples=len(prompts),
        lengths=list(lengths),
        trained=trained_parts(rows) if rows is not None else None,
    )
