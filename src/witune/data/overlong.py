"""Bound the tokenizing work of overlong samples by what truncation will keep.

A 30 MB record took 6 GB and over a minute to tokenize at max_length 64, to keep 64 tokens. When a sample's
text is far longer than `max_length` tokens can cover, only the part truncation keeps is tokenized: for
`left` the end of the prompt and the start of the response, for `right` and `drop` the start.

Why the kept tokens are the same as from the whole text:
- A token covers at most `longest` characters (the longest vocabulary entry), so `budget = (max_length +
  MARGIN) * longest` characters hold at least max_length + MARGIN tokens; truncation keeps max_length of them.
- Text is cut only where a whitespace run starts after a non-space character, and only for tokenizers that
  pre-tokenize: BPE then works inside pre-tokens, which never span that point (GPT-2 style, Metaspace and
  whitespace pre-tokenizers all start a new pre-token there), so every token away from the cut is unchanged.
- It is checked, not assumed: a cut part must still give at least max_length + MARGIN tokens, else the sample
  is tokenized whole. `tests/test_bad_input.py` compares both paths on long real records.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import replace
from typing import Any

from witune.data.render import Segment

MARGIN = 64  # tokens beyond max_length kept next to a cut: the cut's neighbourhood is always truncated away
_CUT = re.compile(r"(?<=\S)\s")  # a whitespace run's first character, preceded by a non-space
_LONGEST: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def longest_token_chars(tokenizer: Any) -> int | None:
    """Characters in the longest vocabulary entry, or None when cutting is unsafe for this tokenizer (no Rust
    backend, or no pre-tokenizer: BPE over the whole text, where a cut could change tokens far from it)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.pre_tokenizer is None:
        return None
    if tokenizer not in _LONGEST:
        _LONGEST[tokenizer] = max((len(t) for t in tokenizer.get_vocab()), default=1)
    return _LONGEST[tokenizer]


def budget(tokenizer: Any, max_length: int | None) -> int | None:
    """Characters that surely hold max_length + MARGIN tokens; None: never cut."""
    if max_length is None:
        return None
    longest = longest_token_chars(tokenizer)
    return None if longest is None else (max_length + MARGIN) * longest


def _prefix(segs: list[Segment], chars: int) -> list[Segment] | None:
    """The segments cut after at least `chars` characters (at a whitespace run); None if no cut is needed
    or possible."""
    out, total = [], 0
    for s in segs:
        if total + len(s.text) <= chars:
            out.append(s)
            total += len(s.text)
            continue
        m = _CUT.search(s.text, max(0, chars - total))
        if m is None:
            return None
        out.append(replace(s, text=s.text[: m.start()]))
        return out
    return None


def _suffix(segs: list[Segment], chars: int) -> list[Segment] | None:
    """The segments cut so that at least `chars` characters at the end remain; None if not needed/possible."""
    out, total = [], 0
    for s in reversed(segs):
        if total + len(s.text) <= chars:
            out.append(s)
            total += len(s.text)
            continue
        hi = len(s.text) - (chars - total)  # the cut must be at or before this index
        last = None
        for match in _CUT.finditer(s.text, max(0, hi - 65_536), hi + 1):  # keep the last match
            last = match
        if last is None or last.start() > hi:
            return None
        out.append(replace(s, text=s.text[last.start() :]))
        return out[::-1]
    return None


def cut_segments(segs: list[Segment], chars: int, truncation: str) -> tuple[list[Segment], list[str]]:
    """Segments with the overlong parts cut, and which parts were cut ('prompt', 'response', 'all')."""
    if sum(len(s.text) for s in segs) <= chars:
        return segs, []
    if truncation != "left":
        cut = _prefix(segs, chars)
        return (segs, []) if cut is None else (cut, ["all"])
    first = next((i for i, s in enumerate(segs) if s.is_response), len(segs))
    prompt, rest = segs[:first], segs[first:]
    parts: list[str] = []
    if (p := _suffix(prompt, chars)) is not None:
        prompt, parts = p, [*parts, "prompt"]
    if (r := _prefix(rest, chars)) is not None:
        rest, parts = r, [*parts, "response"]
    return prompt + rest, parts


def enough_tokens(row: Any, parts: list[str], max_length: int) -> bool:
    """Whether every cut part still has max_length + MARGIN tokens (else the sample is tokenized whole)."""
    need = max_length + MARGIN
    first = next((i for i, r in enumerate(row.response) if r), len(row.response))
    counts = {"all": len(row.input_ids), "prompt": first, "response": len(row.input_ids) - first}
    return all(counts[p] >= need for p in parts)
