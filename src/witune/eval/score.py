"""Weighted loss of a model on a data set without training, with per-role NLL and perplexity."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from tqdm.auto import tqdm

from witune.data.collate import pad_collate
from witune.data.render import Rendered
from witune.loss import DynamicWeight, LossSums, weighted_nll


@dataclass
class Score:
    loss: float  # weighted_sum / normalizer
    normalization: str
    dynamic_weight: str  # "none", or the dynamic weight in weighted_sum (e.g. "dft")
    normalizer: float
    weighted_sum: float
    prompt_nll: float  # summed over prompt tokens (unweighted)
    prompt_tokens: int
    response_nll: float
    response_tokens: int
    samples: int

    @property
    def prompt_nll_per_token(self) -> float:
        return self.prompt_nll / self.prompt_tokens if self.prompt_tokens else float("nan")

    @property
    def response_nll_per_token(self) -> float:
        return self.response_nll / self.response_tokens if self.response_tokens else float("nan")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prompt_nll_per_token"] = self.prompt_nll_per_token
        d["response_nll_per_token"] = self.response_nll_per_token
        d["prompt_perplexity"] = math.exp(self.prompt_nll_per_token) if self.prompt_tokens else float("nan")
        d["response_perplexity"] = math.exp(self.response_nll_per_token) if self.response_tokens else float("nan")
        return d


@torch.no_grad()
def score(
    model: Any,
    rows: list[Rendered],
    pad_token_id: int,
    normalization: str | float = "nonzero",
    batch_size: int = 8,
    progress: bool = True,
    dynamic: DynamicWeight | None = None,
) -> Score:
    """Sum the weighted NLL over all rows (batched by similar length) and normalise once at the end.
    `dynamic`: a dynamic token weight in the weighted sum, as in training (the per-role NLL stays plain)."""
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths together: less padding
    total: LossSums | None = None
    for start in tqdm(range(0, len(order), batch_size), desc="scoring", unit="batch", disable=not progress):
        batch = pad_collate([rows[i] for i in order[start : start + batch_size]], pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        logits = model(**inputs, use_cache=False).logits
        side = None if dynamic is None else dynamic.side_input(inputs, batch["labels"])
        s = weighted_nll(
            logits, batch["labels"], batch["weights"], batch["response_mask"], dynamic=dynamic, side=side
        ).detached()
        total = s if total is None else total + s
    assert total is not None, "no rows to score"
    norm = total.normalizer(normalization)
    return Score(
        loss=float(total.loss(normalization)),
        normalization=str(normalization),
        dynamic_weight="none" if dynamic is None else dynamic.name,
        normalizer=float(norm),
        weighted_sum=float(total.weighted_sum),
        prompt_nll=float(total.prompt_nll),
        prompt_tokens=int(total.prompt_tokens),
        response_nll=float(total.response_nll),
        response_tokens=int(total.response_tokens),
        samples=len(rows),
    )


def score_each(model: Any, rows: list[Rendered], pad_token_id: int) -> tuple[Score, list[float]]:
    """(pooled Score, each row's response NLL per token): every row scored once, on its own (no padding), and
    the pooled score summed from them, so per-row comparisons and the totals come from the same single pass."""
    each = [score(model, [r], pad_token_id, progress=False) for r in rows]
    total = replace(
        each[0],
        prompt_nll=sum(s.prompt_nll for s in each),
        prompt_tokens=sum(s.prompt_tokens for s in each),
        response_nll=sum(s.response_nll for s in each),
        response_tokens=sum(s.response_tokens for s in each),
        samples=sum(s.samples for s in each),
        weighted_sum=float("nan"),
        normalizer=float("nan"),
        loss=float("nan"),
    )
    return total, [s.response_nll_per_token for s in each]
