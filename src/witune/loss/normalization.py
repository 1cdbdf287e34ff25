"""The normaliser Z of a step as a type: a name from `NORMALIZATIONS` or a positive number, parsed once.

Configs and command lines give it as text (`normalization: nonzero`, `--set normalization=512`); it is parsed
at that edge (`parse_normalization`, which the config kernel calls through the `Normalization` annotation),
so everything after it holds either one of the names or a float, never a string that may hold a number.
"""

from __future__ import annotations

import math
from typing import Annotated

from witune.loss.weighted import NORMALIZATIONS

# A fixed Z below this is a typo, not a setting: 1e-300 turns every loss into inf (which a Trainer logs as 0.0).
MIN_NORMALIZER = 1e-6
_WHAT = f"must be one of {NORMALIZATIONS} or a positive number (finite, >= {MIN_NORMALIZER:g})"


def parse_normalization(value: object) -> str | float:
    """'nonzero' / 'weight_sum' / 'tokens', or a positive finite number (given as a number or as text)."""
    if isinstance(value, str) and value in NORMALIZATIONS:
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(_WHAT)
    try:
        number = float(value)
    except (ValueError, OverflowError):  # OverflowError: an int of hundreds of digits has no float
        raise ValueError(_WHAT) from None
    if not (number >= MIN_NORMALIZER and math.isfinite(number)):
        raise ValueError(_WHAT)
    return number


def normalization_problem(value: object) -> str | None:
    """Why `value` is not a parsed normalisation (a name, or a positive finite float), or None when it is one."""
    if isinstance(value, str):
        return None if value in NORMALIZATIONS else _WHAT
    try:
        return None if parse_normalization(value) == value else _WHAT
    except ValueError as e:
        return str(e)


def normalization_label(value: str | float) -> str:
    """The text of a normalisation in tables and run ids: the name, or the number without a trailing '.0'."""
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# What a config field holds: the kernel (`witune.flat_config.coerce`) converts values with the parser.
Normalization = Annotated[str | float, parse_normalization]
