"""Spans inside a message that get their own weight: reasoning (`<think> ... </think>`), tool calls, any pair of
delimiters (`RoleWeights.span_markers`).

A span includes its two delimiters. Spans do not nest: inside an open span, other opening delimiters are plain
text. An opening delimiter without its closing one, or a closing one without an opening one, is an error naming
the record and the message: a silent rule would shift the weight onto the wrong text.
"""

from __future__ import annotations

from collections.abc import Mapping

from witune.errors import DataError, Location


def split_spans(
    text: str, markers: Mapping[str, tuple[str, str]], location: Location | None, field: str
) -> list[tuple[str, str | None]]:
    """`text` cut into (piece, span kind or None) in order; the pieces join back to `text`.

    >>> split_spans("a<think>b</think>c", {"think": ("<think>", "</think>")}, None, "m")
    [('a', None), ('<think>b</think>', 'think'), ('c', None)]
    >>> split_spans("<think>b", {"think": ("<think>", "</think>")}, Location("x.jsonl", 2, "line"), "messages[1]")
    Traceback (most recent call last):
    ...
    witune.errors.DataError: x.jsonl, line 2, field 'messages[1]': unterminated think span: '<think>' at ...
    """
    if not markers or not any(opening in text or closing in text for opening, closing in markers.values()):
        return [(text, None)]
    # The next occurrence of every delimiter at or after `pos`, found again only once `pos` has passed it: each
    # search resumes past the previous hit, so the text is scanned about once per delimiter (searching every
    # kind from `pos` at every span made many spans of two kinds quadratic: 200,000 took minutes).
    ahead: dict[str, int] = {}

    def next_at(delimiter: str, pos: int) -> int:
        i = ahead.get(delimiter, -2)
        if i == -2 or 0 <= i < pos:
            i = ahead[delimiter] = text.find(delimiter, pos)
        return i

    out: list[tuple[str, str | None]] = []
    pos = 0
    while True:
        found = [(i, name) for name, (opening, _) in markers.items() if (i := next_at(opening, pos)) >= 0]
        start, name = min(found) if found else (len(text), None)
        for other, (_, closing) in markers.items():
            stray = next_at(closing, pos)  # a closing delimiter wholly before the next opening one
            if 0 <= stray and stray + len(closing) <= start:
                raise DataError(
                    location,
                    f"{closing!r} at character {stray} closes a {other} span that was never opened",
                    field,
                    kind="malformed",
                )
        if name is None:
            break
        opening, closing = markers[name]
        end = next_at(closing, start + len(opening))
        if end < 0:
            raise DataError(
                location,
                f"unterminated {name} span: {opening!r} at character {start} has no {closing!r} after it",
                field,
                kind="malformed",
            )
        if start > pos:
            out.append((text[pos:start], None))
        pos = end + len(closing)
        out.append((text[start:pos], name))
    if pos < len(text):
        out.append((text[pos:], None))
    return out
