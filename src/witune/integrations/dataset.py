"""Any data set witune reads -> a `datasets.Dataset` of token ids with exact per-token loss weights.

The rows are witune's own rendering (`witune.data.tokenize_examples`), so token for token and weight for weight
they are what `witune inspect --json` shows and what `witune train` trains on; only the layout changes to the
Hugging Face convention (unshifted labels):

- `input_ids`, `attention_mask` (all ones; the collator pads);
- `loss_weights[i]`: the weight of predicting token i (0 for the first token, as in `Rendered.weights`);
- `labels[i]`: `input_ids[i]` where `loss_weights[i] != 0`, else -100. Zero-weight tokens are never targets,
  so a model's own loss, TRL's fused head and the Trainer's `num_items_in_batch` all skip them, and the
  Trainer's count of labels is the WIT normaliser (tokens with non-zero weight);
- `response_mask[i]`: token i belongs to a trained response (the role mask), for prompt/response diagnostics;
- `roles`: the role of each token (system, user, assistant, tool, template), as `witune inspect` colours it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from witune.data import (
    DataError,
    Location,
    RoleWeights,
    detect_format,
    load_examples,
    to_examples,
    tokenize_examples,
)
from witune.data.example import Example
from witune.data.render import Rendered
from witune.loss import IGNORE_INDEX


def weighted_dataset(
    data: Any,
    tokenizer: Any,
    prompt_weight: float = 0.0,
    response_weight: float = 1.0,
    *,
    role_weights: dict[str, float] | None = None,
    span_weights: dict[str, float] | None = None,
    span_markers: dict[str, tuple[str, str]] | None = None,
    template: str = "auto",
    max_length: int | None = None,
    truncation: str = "left",
    final_turn_only: bool = False,
    format: str = "auto",
    split: str = "train",
    on_error: str = "raise",
) -> Any:
    """`data` (a file or folder path, a hub name, a `datasets.Dataset` or a list of records) -> `datasets.Dataset`.

    Every format witune reads is accepted (alpaca, self_instruct, prompt_completion, messages, sharegpt);
    rendering, truncation and errors are those of `witune train` with the same arguments, static weights
    included (`span_weights`, `span_markers`; message and sample weights from the data: `witune.data.weights`).
    """
    import datasets

    from witune.data import DEFAULT_SPAN_MARKERS

    markers = {**DEFAULT_SPAN_MARKERS, **(span_markers or {})}
    weights = RoleWeights(prompt_weight, response_weight, dict(role_weights or {}), dict(span_weights or {}), markers)
    examples = _examples(data, format, split, on_error)
    data = tokenize_examples(
        examples,
        tokenizer,
        weights,
        template=template,
        max_length=max_length,
        truncation=truncation,
        final_turn_only=final_turn_only,
        on_error=on_error,
    )
    for line in data.warnings(weights):
        warnings.warn(line, stacklevel=2)
    return datasets.Dataset.from_list([hf_row(r) for r in data.rows])


def hf_row(r: Rendered) -> dict[str, list]:
    """One rendered sample in the Hugging Face layout described in the module docstring."""
    return {
        "input_ids": list(r.input_ids),
        "attention_mask": [1] * len(r),
        "labels": [t if w != 0 else IGNORE_INDEX for t, w in zip(r.input_ids, r.weights)],
        "loss_weights": [float(w) for w in r.weights],
        "response_mask": [bool(x) for x in r.response],
        "roles": list(r.roles),
    }


def _examples(data: Any, format: str, split: str, on_error: str) -> list[Example]:
    if isinstance(data, (str, Path)):
        return load_examples(data, format=format, on_error=on_error, split=split).examples
    name = getattr(getattr(data, "info", None), "dataset_name", None) or type(data).__name__
    out: list[Example] = []
    fmt = format
    for i, rec in enumerate(data, start=1):  # a datasets.Dataset or any iterable of records
        loc = Location(str(name), i)
        try:
            if fmt == "auto":
                fmt = detect_format(rec, loc)
            out.extend(to_examples(rec, fmt, loc))
        except DataError:
            if on_error == "raise":
                raise
    if not out:
        raise DataError(Location(str(name), 0, "dataset"), "no usable examples")
    return out
