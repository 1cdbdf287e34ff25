"""Examples -> truncated token rows, with a summary of everything that was dropped and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from witune.data import overlong
from witune.data.example import Example
from witune.data.render import Rendered, render_segments, tokenize_segments
from witune.data.weights import RoleWeights
from witune.errors import ConfigError, DataError, check_on_error

TRUNCATIONS = ("left", "right", "drop")
_BATCH = 1000  # examples per batched tokenizer call


@dataclass
class TokenizedData:
    rows: list[Rendered]
    dropped_too_long: int = 0  # truncation="drop"
    truncated: int = 0  # rows that lost tokens to truncation
    zero_trainable: list[DataError] = field(default_factory=list)  # lost every trainable token (skipped)
    skipped: list[DataError] = field(default_factory=list)  # could not be rendered (skipped)
    span_counts: dict[str, int] = field(default_factory=dict)  # weighted spans found, per kind (0: none found)

    def summary(self) -> str:
        parts = [f"{len(self.rows)} rows"]
        if self.truncated:
            parts.append(f"{self.truncated} truncated")
        if self.dropped_too_long:
            parts.append(f"{self.dropped_too_long} dropped as too long")
        if self.zero_trainable:
            parts.append(f"{len(self.zero_trainable)} dropped with zero trainable tokens")
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped as unrenderable")
        if cut := sum(1 for r in self.rows if r.cuts):
            parts.append(f"{cut} with a token boundary cut (witune.data.tokens)")
        return ", ".join(parts)

    def warnings(self, weights: RoleWeights) -> list[str]:
        """One line per span kind given a weight that no sample contains (the weight then changes nothing)."""
        return [
            f"span weight {kind}={w:g}: no {weights.span_markers[kind][0]}...{weights.span_markers[kind][1]} span "
            f"in any of the {len(self.rows)} rows, so it weighs nothing (check the delimiters: span_markers)"
            for kind, w in weights.spans.items()
            if not self.span_counts.get(kind)
        ]


def truncate(row: Rendered, max_length: int, policy: str) -> Rendered | None:
    """Cut a row to max_length tokens. `left` removes prompt tokens from the start and keeps the response
    (cutting the response's end only if it alone is too long); `right` cuts the end; `drop` returns None."""
    n = len(row)
    if n <= max_length:
        return row
    if policy == "drop":
        return None
    if policy == "left":
        first_response = next((i for i, r in enumerate(row.response) if r), n)
        start = min(n - max_length, first_response)
        sl = slice(start, start + max_length)
    elif policy == "right":
        sl = slice(0, max_length)
    else:
        raise ConfigError(f"unknown truncation {policy!r}; choose one of {TRUNCATIONS}")
    return row.sliced(sl)  # the new first token is not predicted by anything: weight 0


def tokenize_examples(
    examples: list[Example],
    tokenizer: Any,
    weights: RoleWeights,
    *,
    template: str = "auto",
    max_length: int | None = None,
    truncation: str = "left",
    final_turn_only: bool = False,
    on_error: str = "raise",
    progress: bool = False,
) -> TokenizedData:
    """Render, tokenize (batched) and truncate. With on_error="raise" (default) an unrenderable sample or one
    left with zero trainable tokens is an error naming its location; with "skip" it is dropped and listed."""
    check_on_error(on_error)
    if truncation not in TRUNCATIONS:
        raise ConfigError(f"unknown truncation {truncation!r}; choose one of {TRUNCATIONS}")
    out = TokenizedData([], span_counts=dict.fromkeys(weights.spans, 0))
    found: Counter[str] = Counter()
    markers = weights.active_markers
    chars = overlong.budget(tokenizer, max_length)
    bar = tqdm(total=len(examples), desc="tokenizing", unit="ex", disable=not progress)
    try:  # the bar ends its line before an error propagates: else the error is printed glued onto it
        for b in range(0, len(examples), _BATCH):
            batch = examples[b : b + _BATCH]
            segs, kept, cuts = [], [], []
            for ex in batch:
                try:
                    full = render_segments(ex, tokenizer, template, final_turn_only, markers)
                    found.update(s.span for s in full if s.span)
                    # Tokenize only what truncation can keep (see witune.data.overlong): bounded work per sample.
                    cut, parts = overlong.cut_segments(full, chars, truncation) if chars else (full, [])
                    segs.append(cut)
                    kept.append(ex)
                    cuts.append((full, parts))
                except DataError as err:
                    _fail(out.skipped, err, on_error)
            for row, ex, (full, parts) in zip(tokenize_segments(segs, kept, tokenizer, weights), kept, cuts):
                # parts is only non-empty when a cut was made, which needs max_length (see overlong.budget)
                if parts and max_length is not None and not overlong.enough_tokens(row, parts, max_length):
                    row = tokenize_segments([full], [ex], tokenizer, weights)[0]  # the cut was too tight: whole
                if max_length is not None:
                    trimmed = truncate(row, max_length, truncation)
                    if trimmed is None:
                        out.dropped_too_long += 1
                        continue
                    out.truncated += trimmed is not row
                    row = trimmed
                if row.trainable_tokens == 0:
                    why = "truncated to zero trainable tokens" if max_length else "no trainable tokens"
                    _fail(
                        out.zero_trainable,
                        DataError(
                            row.location,
                            f"{why} (max_length={max_length}, weights "
                            f"prompt={weights.prompt}, response={weights.response})",
                            kind="no_trainable",
                        ),
                        on_error,
                    )
                    continue
                out.rows.append(row)
            bar.update(len(batch))
    finally:
        bar.close()
    out.span_counts.update(found)
    return out


def _fail(bucket: list[DataError], err: DataError, on_error: str) -> None:
    if on_error == "raise":
        raise err
    bucket.append(err)
