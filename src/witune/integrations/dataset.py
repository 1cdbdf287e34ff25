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

import logging
import warnings
from pathlib import Path
from typing import Any

from witune.data import (
    DataError,
    Location,
    detect_format,
    load_examples,
    to_examples,
    tokenize_examples,
)
from witune.data.example import Example
from witune.data.render import Rendered
from witune.data.weights import build_role_weights
from witune.errors import ConfigError
from witune.loss import IGNORE_INDEX

log = logging.getLogger(__name__)


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
    allow_weight_above_one: bool = False,
) -> Any:
    """`data` (a file or folder path, a hub name, a `datasets.Dataset` or a list of records) -> `datasets.Dataset`.

    Every format witune reads is accepted (alpaca, self_instruct, prompt_completion, messages, sharegpt);
    rendering, truncation and errors are those of `witune train` with the same arguments, static weights
    included (`span_weights`, `span_markers`; message and sample weights from the data: `witune.data.weights`),
    and so are the checks: weights above 1 need `allow_weight_above_one=True`, and no usable row at all is an
    error (with `on_error="skip"` too), never an empty Dataset.
    """
    import datasets

    weights, warned = build_role_weights(
        prompt_weight,
        response_weight,
        roles=role_weights,
        spans=span_weights,
        span_markers=span_markers,
        allow_above_one=allow_weight_above_one,
    )
    for line in warned:
        log.warning(line)
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2):
        raise ConfigError(f"max_length must be >= 2 or None, got {max_length!r}")
    examples = _examples(data, format, split, on_error)
    tokenized = tokenize_examples(
        examples,
        tokenizer,
        weights,
        template=template,
        max_length=max_length,
        truncation=truncation,
        final_turn_only=final_turn_only,
        on_error=on_error,
    )
    for line in tokenized.warnings(weights):
        warnings.warn(line, stacklevel=2)
    if not tokenized.rows:
        raise ConfigError(f"no trainable rows in {_name(data)} ({tokenized.summary()})")
    return datasets.Dataset.from_list([hf_row(r) for r in tokenized.rows])


def _name(data: Any) -> str:
    if isinstance(data, (str, Path)):
        return str(data)
    return str(getattr(getattr(data, "info", None), "dataset_name", None) or type(data).__name__)


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
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    name = _name(data)
    out: list[Example] = []
    skipped: list[DataError] = []
    fmt = format
    for i, rec in enumerate(data, start=1):  # a datasets.Dataset or any iterable of records
        loc = Location(name, i)
        try:
            if fmt == "auto":
                fmt = detect_format(rec, loc)
            out.extend(to_examples(rec, fmt, loc))
        except DataError as err:
            if on_error == "raise":
                raise
            skipped.append(err)
    if not out:
        detail = f" ({len(skipped)} bad records skipped, first: {skipped[0]})" if skipped else ""
        raise DataError(Location(name, 0, "dataset"), f"no usable examples{detail}")
    return out
