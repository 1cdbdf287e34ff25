"""Raw Alpaca records with their locations, and writing them back in the same shape (JSON array or JSONL)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from witune.data.example import Example
from witune.data.readers import LINE_SUFFIXES, convert_records
from witune.errors import DataError, Location


@dataclass
class AlpacaRecord:
    """One record as read (all its keys kept) and the Example it converts to."""

    location: Location
    record: dict[str, Any]
    example: Example


def read_alpaca(path: str | Path) -> list[AlpacaRecord]:
    """Every record of an Alpaca (instruction/input/output) file; Self-Instruct records (instruction + instances)
    are flattened to one Alpaca record per instance. Any other format is a DataError naming the file."""
    out: list[AlpacaRecord] = []
    for r in convert_records(path, detect_each=True):  # Alpaca and Self-Instruct records may share a file
        loc, rec, fmt = r.location, r.record, r.format
        if r.record is None or fmt is None:  # unreadable, or of no known format
            assert r.error is not None
            raise r.error
        if fmt not in ("alpaca", "self_instruct"):
            raise DataError(loc, f"this command needs Alpaca records (instruction/input/output), this file has {fmt}")
        if r.error is not None:
            raise r.error
        for ex in r.examples:
            flat = dict(rec) if fmt == "alpaca" else {}
            flat.update(instruction=ex.fields["instruction"], input=ex.fields["input"], output=ex.fields["output"])
            out.append(AlpacaRecord(loc, flat, ex))
    return out


def write_records(records: list[dict[str, Any]], path: str | Path) -> Path:
    """JSON Lines for .jsonl/.ndjson, otherwise one JSON array (the Alpaca files' layout)."""
    from witune.atomic import atomic_open

    out = Path(path)
    with atomic_open(out, "w") as f:  # a kill or a full disk leaves the old file, never a truncated one
        if out.suffix.lower() in LINE_SUFFIXES:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        else:
            json.dump(records, f, ensure_ascii=False, indent=2)
            f.write("\n")
    return out
