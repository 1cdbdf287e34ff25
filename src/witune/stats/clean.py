"""Find and remove bad records: invalid ones, empty or placeholder outputs, exact duplicates, overlong samples.

Works on raw records of any supported format (each record kept byte-for-byte in meaning: the cleaned file holds
the surviving records unchanged) and says for every removed record where it was, why, and which field.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from witune.data.readers import convert_records
from witune.errors import check_counts

# Outputs that stand for "nothing" (AlpacaDataCleaned lists "empty outputs" and "N/A outputs" among the
# original Alpaca's defects, PLW paper Sec. 4.3). Compared after lower-casing and stripping spaces and dots.
PLACEHOLDERS = {
    "<noinput>",
    "<no input>",
    "<nooutput>",
    "<no output>",
    "no output",
    "noinput",
    "nooutput",
    "n/a",
    "na",
    "none",
    "null",
    "nil",
    "empty",
    "-",
    "--",
    "",
    "<empty>",
    "[]",
    "{}",
    '""',
    "''",
}
_STRIP = re.compile(r"^[\s.]+|[\s.]+$")

REASONS = ("invalid", "empty output", "placeholder output", "duplicate", "overlong")


@dataclass(frozen=True)
class Removal:
    location: str
    index: int  # 1-based line (JSONL, CSV) or record (JSON array) number
    reason: str  # one of REASONS
    field: str
    detail: str
    # The removed record itself, as read (None for a line that could not be parsed: see `raw`), so that nothing
    # cleaning drops is lost: the report file can be grepped, fixed and appended back.
    record: Any = None
    raw: str | None = None  # the line's text when it was not valid JSON (JSON Lines only)


@dataclass
class Cleaning:
    kept: list[Any]
    removed: list[Removal]
    total: int
    overlong_rule: str

    def counts(self) -> dict[str, int]:
        return {r: sum(x.reason == r for x in self.removed) for r in REASONS}


def is_placeholder(text: str) -> bool:
    """True for outputs that mean "nothing".

    >>> [is_placeholder(t) for t in ("<noinput>", " N/A. ", "None", "Paris", "n/a is not an answer")]
    [True, True, True, False, False]
    """
    return _STRIP.sub("", text.lower()) in PLACEHOLDERS


def _response_field(fmt: str, example) -> str:
    if fmt in ("alpaca", "self_instruct"):
        return "output"
    if fmt == "prompt_completion":
        return "completion"
    return f"{'messages' if fmt == 'messages' else 'conversations'}[{len(example.messages) - 1}]"


def clean(path: str | Path, tokenizer=None, max_tokens: int = 2048, max_chars: int = 16000) -> Cleaning:
    """Check every record of ``path``. Overlong = more than ``max_tokens`` tokens (all text, no template) when a
    tokenizer is given, else more than ``max_chars`` characters."""
    # A limit below 1 marks every record overlong: the "cleaned" file would be empty and the exit status 0.
    check_counts(max_tokens=max_tokens, max_chars=max_chars)
    kept: list[Any] = []
    removed: list[Removal] = []
    seen: dict[str, str] = {}  # canonical JSON -> location of its first occurrence
    sizes: list[tuple[int, Any, str]] = []  # (index in kept, location, all text) for the overlong check
    unparsed: dict[int, int] = {}  # line number -> index in `removed` of lines that were not valid records
    total = 0
    for r in convert_records(path):
        total += 1
        loc, rec, fmt, examples = r.location, r.record, r.format, r.examples
        where = str(loc)
        if r.error is not None:
            e = r.error
            reason = "empty output" if e.kind == "empty_response" else "invalid"
            if rec is None and loc.unit == "line":
                unparsed[loc.index] = len(removed)
            removed.append(Removal(where, loc.index, reason, e.field or "", e.reason, rec))
            continue
        assert fmt is not None  # convert_records sets the format whenever it reports no error
        bad = next(((ex, ex.response_text) for ex in examples if is_placeholder(ex.response_text)), None)
        if bad is not None:
            removed.append(
                Removal(where, loc.index, "placeholder output", _response_field(fmt, bad[0]), repr(bad[1][:40]), rec)
            )
            continue
        key = json.dumps(rec, sort_keys=True, ensure_ascii=False)
        if key in seen:
            removed.append(Removal(where, loc.index, "duplicate", "", f"same record as {seen[key]}", rec))
            continue
        seen[key] = where
        sizes.append((len(kept), loc, "\n".join(m.content for ex in examples for m in ex.messages)))
        kept.append(rec)
    # Length check last and batched: one tokenizer call for the whole file.
    if tokenizer is not None:
        from witune.stats.lengths import count_tokens

        lengths = count_tokens([t for _, _, t in sizes], tokenizer)
        limit, unit, rule = max_tokens, "tokens", f"> {max_tokens} tokens"
    else:
        lengths = [len(t) for _, _, t in sizes]
        limit, unit, rule = max_chars, "characters", f"> {max_chars} characters"
    drop = set()
    for (i, loc, _), n in zip(sizes, lengths):
        if n > limit:
            removed.append(Removal(str(loc), loc.index, "overlong", "", f"{n} {unit} (limit {limit})", kept[i]))
            drop.add(i)
    kept = [r for i, r in enumerate(kept) if i not in drop]
    if unparsed:
        for n, raw in _lines(Path(path), set(unparsed)):
            old = removed[unparsed[n]]
            removed[unparsed[n]] = Removal(old.location, old.index, old.reason, old.field, old.detail, None, raw)
    removed.sort(key=lambda r: r.index)  # file order, whatever check found it
    return Cleaning(kept, removed, total, rule)


def _lines(path: Path, wanted: set[int]) -> list[tuple[int, str]]:
    """The text of the given 1-based lines of a file (bytes that are not UTF-8 kept as \\x escapes)."""
    found = []
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if n in wanted:
                found.append((n, raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")))
                if len(found) == len(wanted):
                    break
    return found


def write_removals(cleaning: Cleaning, path: str | Path) -> Path:
    """One JSON line per removed record: location, reason, field, detail, and the record itself (`record`, or
    `raw` for a line that was not valid JSON). Written atomically, like the cleaned file."""
    from witune.atomic import atomic_open

    out = Path(path)
    with atomic_open(out, "w") as f:
        for r in cleaning.removed:
            f.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
    return out
