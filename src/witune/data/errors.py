"""Errors for bad input data: every message names the file, the line or record, and the field."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """Where a record came from: a file (or dataset name) and a 1-based line (JSONL, CSV) or record index."""

    source: str
    index: int
    unit: str = "record"  # "line" for JSONL/CSV, "record" for JSON arrays, Parquet rows and datasets

    def __str__(self) -> str:
        return f"{self.source}, {self.unit} {self.index}"


class DataError(ValueError):
    """A record that cannot be used as it is. Carries its location and the offending field."""

    def __init__(self, location: Location | None, message: str, field: str | None = None):
        self.location = location
        self.field = field
        self.reason = message
        where = str(location) if location is not None else "<input>"
        fld = f", field '{field}'" if field else ""
        super().__init__(f"{where}{fld}: {message}")


class ConfigError(ValueError):
    """A configuration that cannot work (for example both loss weights zero)."""
