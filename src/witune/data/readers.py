"""Read raw records from JSON, JSONL, CSV, Parquet files, saved datasets or `datasets` hub names.

Every record comes with its `Location` (file and 1-based line for line formats, record index otherwise) so
that any later error can say exactly where the bad input is.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from witune.data.example import Example
from witune.data.formats import FORMATS, detect_format, to_examples
from witune.errors import ConfigError, DataError, Location, check_on_error

LINE_SUFFIXES = frozenset({".jsonl", ".ndjson"})
# Every file suffix `read_records` reads: the one list sweeps, preflight and help texts use.
DATA_SUFFIXES = frozenset({".json", ".csv", ".parquet"} | LINE_SUFFIXES)
SUFFIX_LIST = ", ".join(sorted(DATA_SUFFIXES))


def read_records(source: str | Path, split: str = "train") -> Iterator[tuple[Location, Any]]:
    """Yield (location, record). Errors that make one line unreadable are yielded as DataError values
    (not raised) so that the caller can choose to skip them and go on."""
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in LINE_SUFFIXES:
            yield from _jsonl(path)
        elif suffix == ".json":
            yield from _json(path)
        elif suffix == ".csv":
            yield from _csv(path)
        elif suffix == ".parquet":
            yield from _parquet(path)
        else:
            raise DataError(Location(str(path), 0, "file"), f"unsupported file type {suffix!r} (use {SUFFIX_LIST})")
    elif path.is_dir() or not path.suffix:
        yield from _dataset(str(source), split)
    else:
        raise DataError(Location(str(path), 0, "file"), "file not found", kind="not_found")


_BOM = "\ufeff"  # what many Windows tools write at the start of a UTF-8 file; not part of the data


def _decode(raw: bytes, location: Location) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            location, f"invalid UTF-8 (byte {raw[e.start : e.start + 1]!r} at column {e.start + 1})", kind="malformed"
        ) from None


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object_pairs_hook: a key given twice in one object is an error. json.loads would keep the last
    value in silence, so a record with two "output" fields trained on whichever came second."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))  # type: ignore[func-returns-value]
    return obj


def _loads(text: str, loc: Location) -> Any:
    """json.loads that refuses duplicate keys and turns every failure into a DataError at `loc`."""
    try:
        return json.loads(text, object_pairs_hook=_unique_object)
    except json.JSONDecodeError as e:
        raise DataError(loc, f"malformed JSON: {e.msg} (column {e.colno})", kind="malformed") from None
    except _DuplicateKey as e:
        raise DataError(loc, "duplicate key in one JSON object (the value would be ambiguous)", e.key) from None
    except RecursionError:
        raise DataError(loc, "JSON nested too deeply to read (thousands of levels of [ or {)") from None


def _jsonl(path: Path) -> Iterator[tuple[Location, Any]]:
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            loc = Location(str(path), n, "line")
            try:
                text = _decode(raw, loc)
                if n == 1:
                    text = text.removeprefix(_BOM)
                if not text.strip():
                    continue
                yield loc, _loads(text, loc)
            except DataError as err:
                yield loc, err


def _json(path: Path) -> Iterator[tuple[Location, Any]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").removeprefix(_BOM)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(Location(str(path), line, "line"), "invalid UTF-8", kind="malformed") from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_object)
    except json.JSONDecodeError as e:
        if "\n{" in text.strip() or text.lstrip().startswith("{"):
            # A .json file that is really JSON Lines: read it line by line (and report per line).
            yield from _jsonl(path)
            return
        raise DataError(
            Location(str(path), e.lineno, "line"), f"malformed JSON: {e.msg} (column {e.colno})", kind="malformed"
        ) from None
    except _DuplicateKey as e:
        raise DataError(
            Location(str(path), _duplicate_line(text, e.key), "line"),
            "duplicate key in one JSON object (the value would be ambiguous)",
            e.key,
        ) from None
    except RecursionError:
        raise DataError(
            Location(str(path), 1, "line"), "JSON nested too deeply to read (thousands of levels of [ or {)"
        ) from None
    if isinstance(data, dict):
        lists = [k for k, v in data.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(
                Location(str(path), 1, "line"),
                "expected a JSON array of records (or an object holding exactly one array)",
            )
        data = data[lists[0]]
    if not isinstance(data, list):
        raise DataError(Location(str(path), 1, "line"), f"expected a JSON array of records, got {type(data).__name__}")
    for i, rec in enumerate(data, start=1):
        yield Location(str(path), i), rec


def _duplicate_line(text: str, key: str) -> int:
    """Line where the record holding `key` twice starts (only on the error path): the first object, other
    than a top-level wrapper object, that fails to parse for that key."""
    decoder = json.JSONDecoder(object_pairs_hook=_unique_object)
    wrapper = len(text) - len(text.lstrip()) if text.lstrip().startswith("{") else -1
    for i in (i for i, c in enumerate(text) if c == "{" and i != wrapper):
        try:
            decoder.raw_decode(text, i)
        except _DuplicateKey as e:
            if e.key == key:
                return text.count("\n", 0, i) + 1
        except (ValueError, RecursionError):
            continue
    return 1


def _csv(path: Path) -> Iterator[tuple[Location, Any]]:
    raw = path.read_bytes()
    text = _decode(raw, Location(str(path), raw[: _first_bad_utf8(raw)].count(b"\n") + 1, "line"))
    reader = csv.DictReader(io.StringIO(text.removeprefix(_BOM), newline=""))
    line = 1  # the header
    # A long text field is valid data (the length limit applies to tokens, later); csv's default limit of
    # 131,072 characters per field would stop the read with a bare csv.Error.
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, 2**31 - 1))
    try:
        try:
            header = reader.fieldnames or []
        except csv.Error as e:
            raise DataError(Location(str(path), 1, "line"), f"malformed CSV header: {e}", kind="malformed") from None
        dup = next((h for i, h in enumerate(header) if h in header[:i]), None)
        if dup is not None:
            raise DataError(
                Location(str(path), 1, "line"), "column named twice in the header (the value would be ambiguous)", dup
            )
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise DataError(
                    Location(str(path), reader.line_num, "line"), f"malformed CSV: {e}", kind="malformed"
                ) from None
            yield Location(str(path), line + 1, "line"), row
            line = reader.line_num
    finally:
        csv.field_size_limit(limit)


def _parquet(path: Path) -> Iterator[tuple[Location, Any]]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError) as e:
        raise DataError(Location(str(path), 0, "file"), f"not a readable Parquet file ({_first_line(e)})") from None
    for i, row in enumerate(rows, start=1):
        yield Location(str(path), i), row


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _first_bad_utf8(raw: bytes) -> int:
    try:
        raw.decode("utf-8")
        return 0
    except UnicodeDecodeError as e:
        return e.start


def _dataset(name: str, split: str) -> Iterator[tuple[Location, Any]]:
    """A folder saved with `Dataset.save_to_disk`, a folder of data files, or a hub name (needs a network)."""
    import datasets

    path = Path(name)
    try:
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            ds = datasets.load_from_disk(name)
        else:
            ds = datasets.load_dataset(name, split=split)
    except FileNotFoundError as e:
        raise DataError(
            Location(name, 0, "dataset"), f"no such file, folder or dataset ({e})", kind="not_found"
        ) from None
    except Exception as e:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ...)
        raise DataError(Location(name, 0, "dataset"), f"cannot load dataset: {type(e).__name__}: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(Location(name, 0, "dataset"), f"no split {split!r}; available: {list(ds)}")
        ds = ds[split]
    for i, row in enumerate(ds, start=1):
        yield Location(name, i), row


@dataclass
class RecordResult:
    """One record as read, converted: its examples, or the error that stopped it."""

    location: Location
    record: Any  # as read; None when the record itself could not be read (then `error` says why)
    format: str | None  # the format it was converted as; None when it could not be detected
    examples: list[Example]
    error: DataError | None = None


def convert_records(
    source: str | Path, format: str = "auto", split: str = "train", detect_each: bool = False
) -> Iterator[RecordResult]:
    """The one read-detect-convert loop: every record of ``source`` in order, with its examples or its error.

    With ``format="auto"`` the format is detected on the first record where detection succeeds and kept for the
    rest of the file (``detect_each=True``: detected on every record, for callers that accept several formats
    in one file). Errors are returned, never raised, so each caller decides: raise, skip, or report.
    """
    fixed = None if format == "auto" else format
    for loc, rec in read_records(source, split):
        if isinstance(rec, DataError):
            yield RecordResult(loc, None, None if detect_each else fixed, [], rec)
            continue
        fmt = None if detect_each else fixed
        try:
            if fmt is None:
                fmt = detect_format(rec, loc)
                if not detect_each:
                    fixed = fmt
            examples, err = to_examples(rec, fmt, loc), None
        except DataError as e:
            examples, err = [], e
        yield RecordResult(loc, rec, fmt, examples, err)


@dataclass
class LoadResult:
    examples: list[Example]
    skipped: list[DataError] = field(default_factory=list)
    format: str = ""

    def summary(self) -> str:
        s = f"{len(self.examples)} examples ({self.format})"
        if self.skipped:
            s += f", {len(self.skipped)} bad records skipped (first: {self.skipped[0]})"
        return s


def load_examples(
    source: str | Path, format: str = "auto", on_error: str = "raise", split: str = "train", limit: int | None = None
) -> LoadResult:
    """Read and convert every record. `on_error="skip"` skips bad records and lists them in `skipped`."""
    check_on_error(on_error)
    if format != "auto" and format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; choose auto or one of {FORMATS}")
    result = LoadResult([], format=format)
    for r in convert_records(source, format, split):
        result.format = r.format or result.format
        if r.error is not None:
            if on_error == "raise":
                raise r.error
            result.skipped.append(r.error)
        result.examples.extend(r.examples)
        if limit is not None and len(result.examples) >= limit:
            del result.examples[limit:]
            break
    if not result.examples:
        where = Location(str(source), 0, "file")
        detail = f" ({len(result.skipped)} bad records skipped, first: {result.skipped[0]})" if result.skipped else ""
        raise DataError(where, f"no usable examples{detail}")
    return result
