"""Prompt inversion exactly as the PLW paper (Huerta-Enochian & Ko, "Instruction Fine-Tuning: Does Prompt Loss
Matter?", Sec. 4.3) built AlpacaDataShort, Tiny and Medium.

"For instances with empty input, we used 'Predict the prompt that generated the following AI output.' as the new
instruction field. For instances with non-empty input, we used 'Predict the prompt that generated the below AI
output given the following context. Context: <original_input>' as the new instruction field. In all cases we then
used the original completion as the new input field and the original instruction as the new completion field."

AlpacaDataShort inverts every long-completion sample (Rg >= 1, Sec. 2.1). Tiny (Rg 0.042) and Medium (Rg 1.0)
"were generated similarly ... but with different target completion-prompt ratios": with a target, samples whose
inversion moves the data set's Rg towards it are taken in a seeded random order and the prefix whose Rg is
closest to the target is inverted (every prefix's Rg is computed exactly from running sums).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from witune.data.errors import ConfigError
from witune.stats.lengths import count_tokens, sample_lengths
from witune.stats.records import AlpacaRecord

INSTRUCTION_NO_INPUT = "Predict the prompt that generated the following AI output."
INSTRUCTION_WITH_INPUT = "Predict the prompt that generated the below AI output given the following context. Context: "
RG_DEFINITIONS = ("ratio_of_means", "mean_of_ratios")


def inverted_instruction(original_input: str) -> str:
    """The new instruction for a sample with this input.

    >>> inverted_instruction("")
    'Predict the prompt that generated the following AI output.'
    >>> inverted_instruction("x = 3")
    'Predict the prompt that generated the below AI output given the following context. Context: x = 3'
    """
    return INSTRUCTION_WITH_INPUT + original_input if original_input.strip() else INSTRUCTION_NO_INPUT


def invert_record(record: dict[str, Any]) -> dict[str, Any]:
    """The inverted copy of one Alpaca record (other keys kept as they are)."""
    out = dict(record)
    out["instruction"] = inverted_instruction(record.get("input") or "")
    out["input"] = record["output"]
    out["output"] = record["instruction"]
    return out


@dataclass
class Inversion:
    records: list[dict[str, Any]]  # the new data set, in the original order
    inverted: list[int]  # indexes of the inverted samples
    rg_before: dict[str, float]
    rg_after: dict[str, float]
    target: float | None
    definition: str
    candidates: int  # samples that could move Rg towards the target (or long-completion ones without a target)
    not_invertible: list[str] = field(default_factory=list)  # multi-turn records (history) left as they are
    # (lowest, highest) Rg that any choice of samples to invert can give, in the target's definition
    reachable: tuple[float, float] = (float("nan"), float("nan"))

    @property
    def reached(self) -> bool:
        """True without a target, else whether the Rg reached is within 5% of it (inversion has limits: the new
        prompt holds the old completion, so Rg cannot fall much below instruction / (completion + 12 tokens))."""
        if self.target is None:
            return True
        return abs(self.rg_after[self.definition] - self.target) <= 0.05 * self.target


def _rg(p_sum: int, c_sum: int, r_sum: float, n: int) -> dict[str, float]:
    return {"ratio_of_means": c_sum / p_sum if p_sum else float("inf"), "mean_of_ratios": r_sum / n if n else 0.0}


def _extreme_ratio(p: float, c: float, deltas: Sequence[tuple[float, float]], lowest: bool) -> float:
    """Lowest (or highest) (c + sum dc) / (p + sum dp) over subsets of the (dp, dc) moves: Dinkelbach's method.

    For a ratio level q, the best subset takes every move with dc - q dp < 0 (> 0 for the highest); iterating q
    from the current ratio converges in a few steps to the exact optimum (denominators stay positive: every
    inverted sample keeps a non-empty prompt).
    """
    sign = 1.0 if lowest else -1.0
    q = c / p if p else float("inf")
    for _ in range(100):
        take = [(dp, dc) for dp, dc in deltas if sign * (dc - q * dp) < 0]
        pp, cc = p + sum(d[0] for d in take), c + sum(d[1] for d in take)
        new = cc / pp if pp else float("inf")
        if sign * (new - q) >= -1e-15:
            break
        q = new
    return q


def invert(
    records: list[AlpacaRecord],
    tokenizer,
    target_rg: float | None = None,
    seed: int = 0,
    definition: str = "ratio_of_means",
) -> Inversion:
    """Invert long-completion samples (no target) or the subset that brings Rg closest to ``target_rg``."""
    if definition not in RG_DEFINITIONS:
        raise ConfigError(f"unknown Rg definition {definition!r}; choose one of {RG_DEFINITIONS}")
    if target_rg is not None and not target_rg > 0:
        raise ConfigError(f"--target-rg must be a positive number, got {target_rg}")
    lengths = sample_lengths([r.example for r in records], tokenizer)
    # A record with a history is a conversation; the paper's inversion is defined for single turns only.
    ok = [i for i, r in enumerate(records) if not r.record.get("history") and lengths[i].prompt > 0]
    new_instr = count_tokens([inverted_instruction(records[i].record["input"]) for i in ok], tokenizer)
    inv = {i: (n + lengths[i].fields["output"], lengths[i].fields["instruction"]) for i, n in zip(ok, new_instr)}

    p_sum = sum(s.prompt for s in lengths)
    c_sum = sum(s.completion for s in lengths)
    scored = [s for s in lengths if s.prompt > 0]
    r_sum, n = sum(s.rg for s in scored), len(scored)
    before = _rg(p_sum, c_sum, r_sum, n)

    if target_rg is None:
        chosen = [i for i in ok if lengths[i].completion >= lengths[i].prompt]
        candidates = len(chosen)
    else:
        down = target_rg < before[definition]
        cands = [
            i for i in ok if (inv[i][1] / inv[i][0] < lengths[i].rg) == down and inv[i][1] / inv[i][0] != lengths[i].rg
        ]
        random.Random(seed).shuffle(cands)
        candidates = len(cands)
        best_k, best_gap = 0, abs(before[definition] - target_rg)
        p, c, r = p_sum, c_sum, r_sum
        for k, i in enumerate(cands, start=1):
            (pi, ci), (pj, cj) = (lengths[i].prompt, lengths[i].completion), inv[i]
            p, c, r = p - pi + pj, c - ci + cj, r - ci / pi + cj / pj
            gap = abs(_rg(p, c, r, n)[definition] - target_rg)
            if gap < best_gap:
                best_k, best_gap = k, gap
        chosen = cands[:best_k]

    moves = [(inv[i][0] - lengths[i].prompt, inv[i][1] - lengths[i].completion) for i in ok]
    if definition == "ratio_of_means":
        reachable = (_extreme_ratio(p_sum, c_sum, moves, True), _extreme_ratio(p_sum, c_sum, moves, False))
    else:
        ups = [inv[i][1] / inv[i][0] - lengths[i].rg for i in ok]
        reachable = (
            (r_sum + sum(min(0.0, u) for u in ups)) / n if n else 0.0,
            (r_sum + sum(max(0.0, u) for u in ups)) / n if n else 0.0,
        )
    chosen_set = set(chosen)
    for i in chosen:
        p_sum += inv[i][0] - lengths[i].prompt
        c_sum += inv[i][1] - lengths[i].completion
        r_sum += inv[i][1] / inv[i][0] - lengths[i].rg
    out = [invert_record(r.record) if i in chosen_set else dict(r.record) for i, r in enumerate(records)]
    skipped = [str(r.location) for r in records if r.record.get("history")]
    return Inversion(
        out, sorted(chosen), before, _rg(p_sum, c_sum, r_sum, n), target_rg, definition, candidates, skipped, reachable
    )
