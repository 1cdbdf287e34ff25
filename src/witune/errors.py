"""witune's error types, the bottom layer every package imports.

`DataError` is for bad input records: every message names the file, the line or record, and the field, and
`kind` says what class of problem it is (so callers such as `witune clean` branch on `kind`, never on the
message text). `ConfigError` is for configurations that cannot work. The CLI prints either in one line.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Literal

# What is wrong with a record. "invalid" is the catch-all; the others are the classes callers act on.
ErrorKind = Literal[
    "invalid", "malformed", "not_found", "missing_field", "wrong_type", "empty_response", "no_trainable", "template"
]
ERROR_KINDS: tuple[ErrorKind, ...] = (
    "invalid",
    "malformed",
    "not_found",
    "missing_field",
    "wrong_type",
    "empty_response",
    "no_trainable",
    "template",
)


@dataclass(frozen=True)
class Location:
    """Where a record came from: a file (or dataset name) and a 1-based line (JSONL, CSV) or record index."""

    source: str
    index: int
    unit: str = "record"  # "line" for JSONL/CSV, "record" for JSON arrays, Parquet rows and datasets

    def __str__(self) -> str:
        return f"{self.source}, {self.unit} {self.index}"


class DataError(ValueError):
    """A record that cannot be used as it is. Carries its location, the offending field and the error kind."""

    def __init__(
        self, location: Location | None, message: str, field: str | None = None, *, kind: ErrorKind = "invalid"
    ):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown DataError kind {kind!r}; one of {ERROR_KINDS}")
        self.location = location
        self.field = field
        self.reason = message
        self.kind: ErrorKind = kind
        where = str(location) if location is not None else "<input>"
        fld = f", field '{field}'" if field else ""
        super().__init__(f"{where}{fld}: {message}")

    def __reduce__(self):
        # The default pickles `self.args` (the formatted message) and calls __init__ with it, which fails: send
        # the constructor's own arguments instead, so errors cross process boundaries (worker tokenisers).
        return (_rebuild_data_error, (self.location, self.reason, self.field, self.kind))


def _rebuild_data_error(location: Location | None, message: str, field: str | None, kind: ErrorKind) -> DataError:
    return DataError(location, message, field, kind=kind)


class ConfigError(ValueError):
    """A configuration that cannot work (for example both loss weights zero)."""


def shown(value: object) -> str:
    """A value as an error message shows it: a number as Python writes a float, with every digit that tells it
    apart (never `np.float64(nan)`, never 1.0000001 rounded to "1"); anything else as its repr. A whole float
    reads as the number the user wrote (5.0 -> "5"), since weights are floats by the time they are checked.

    >>> import numpy as np

    >>> shown(np.float64("nan")), shown(1.0000001), shown(2), shown(5.0), shown("0.5")
    ('nan', '1.0000001', '2', '5', "'0.5'")
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        text = repr(float(value))
        return text[:-2] if text.endswith(".0") else text
    return repr(value)


ON_ERROR = ("raise", "skip")


def check_on_error(on_error: object) -> None:
    """What to do with a bad record: "raise" (stop at the first) or "skip" (drop and list it); anything else is
    refused, never read as "skip"."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def check_counts(allow_none: bool = False, **counts: object) -> None:
    """Refuse a count that is not a whole number >= 1 (None too, unless `allow_none`: "not set"); a bool is
    refused, never read as 0 or 1.

    >>> check_counts(allow_none=True, limit=None, batch_size=8)
    >>> check_counts(batch_size=0)
    Traceback (most recent call last):
    ...
    witune.errors.ConfigError: batch_size must be a whole number >= 1, got 0
    """
    for name, value in counts.items():
        if value is None and allow_none:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a whole number >= 1, got {shown(value)}")
