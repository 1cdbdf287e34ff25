"""Segments -> token ids with exact per-token weights: the whole text tokenised once, as generation tokenises it.

Why the whole text: tokenising each segment on its own gives ids the model never sees at inference (the Alpaca
preamble's "request.\\n\\n" then ends in one '\\n\\n' token, while the same text tokenised whole, as
`format_prompt` + the tokenizer does at generation, gives '\\n', '\\n', '###'). So the whole rendered text is
tokenised once (fast tokenizers: with character offsets) and each token goes to the segment its first
character is in. Two rules keep the boundaries exact:

1. A token that straddles a segment boundary (its characters lie on both sides) is not split between two
   weights nor given to either side: the text is *cut* there, each side tokenised on its own, so the boundary
   is a token boundary, as it always was with per-segment tokenising. Assigning the token to one side would
   put one segment's weight on the other's text and break the decode check below; the cut changes the ids at
   that one place only. On the shared real data (SmolLM2's tokenizer) it happens only at a
   prompt/response boundary, where the response starts with whitespace or punctuation that merges with the
   prompt's end ("Done." + "..." is one token "...."). Rows cut, alpaca / plain / chat template: GSM8K 2 / 0 / 0
   of 7,473; LIMA 6 / 36 / 3 of 1,029; GPTeacher toolformer 1 / 6 / 0 of 7,673, roleplay 4 / 5 / 0 of 3,146;
   Alpaca seed tasks 11 / 11 / 0 of 175; FastChat dummy conversations 0 / 0 (plain / chat) of 500.
2. The prompt of the last assistant message (what generation feeds the model) must get the ids generation
   gives it: the prompt text tokenised alone. Where the whole-text ids before the response differ from those
   (a straddling token, or whitespace that merges differently because of what follows), the text is cut at
   the response start too. So the trained prompt ids equal the generation prompt ids (tests check every
   template); the response is tokenised in context, as the model produces it after that prompt.

Each row counts its cuts (`Rendered.cuts`; `witune inspect` and `witune stats` report them). After tokenizing,
the tokens of every response and every weighted span decode back to exactly their text, or the sample is an
error: a tokenizer that normalises text would otherwise move the boundary in silence. Tokenizers without a
Rust backend (no offsets) tokenise each segment on its own, the older rule.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from witune.data.example import Example
from witune.data.rendered import Rendered, Segment, generation_prompt_chars
from witune.data.weights import MAX_WEIGHT, TOO_LARGE, RoleWeights
from witune.errors import DataError

Encoded = tuple[list[int], list[tuple[int, int]]]  # ids and (start, end) character offsets
_BACKENDS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_ADDED: weakref.WeakKeyDictionary[Any, frozenset[int]] = weakref.WeakKeyDictionary()
_BYTE_LEVEL: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def tokenize_segments(
    segments_per_example: list[list[Segment]],
    examples: list[Example],
    tokenizer: Any,
    weights: RoleWeights,
    check: bool = True,
) -> list[Rendered]:
    """Tokenize the segments of many examples (batched) and attach exact weights."""
    backend = offsets_backend(tokenizer)
    texts = ["".join(s.text for s in segs) for segs in segments_per_example]
    prompt_ends = [generation_prompt_chars(segs) for segs in segments_per_example]
    if backend is None:
        encoded = [_per_segment(tokenizer, segs) for segs in segments_per_example]
        cuts = [0] * len(texts)
    else:
        whole = _encode(backend, texts)
        # Rule 2 needs the prompt's own ids. Tokenizers split the text at added tokens (<|im_start|>, <s>, ...)
        # before anything else, so the prompt's ids from its last added token on are all that can differ:
        # only that tail is tokenised again (for a chat template, a few characters).
        added = _added_ids(tokenizer, backend)
        byte_level = _byte_level(tokenizer, backend)
        anchors = [_anchor(enc, t, n, added, byte_level) for enc, t, n in zip(whole, texts, prompt_ends)]
        tails = backend.encode_batch_fast([t[a:n] for t, n, (a, _) in zip(texts, prompt_ends, anchors)], False)
        encoded, cuts = [], []
        for text, segs, n, enc, anchor, tail in zip(texts, segments_per_example, prompt_ends, whole, anchors, tails):
            ids, offsets, made = _exact(backend, text, _boundaries(segs), n, enc, anchor[1], tail.ids)
            encoded.append((ids, offsets))
            cuts.append(made)
    out = []
    for segs, ex, (ids, offsets), made in zip(segments_per_example, examples, encoded, cuts):
        ranges = _token_ranges(segs, offsets)
        if check:
            _check_decodes(tokenizer, segs, ranges, ids, ex)
        out.append(_weighted_row(segs, ranges, ex, ids, weights, made))
    return out


def offsets_backend(tokenizer: Any) -> Any:
    """The tokenizer's Rust backend, copied once without post-processor, truncation or padding: ids exactly as
    `tokenizer(text, add_special_tokens=False)` gives them, and untrimmed character offsets (a ByteLevel
    post-processor trims whitespace off the offsets, which would hide straddling tokens). None: no backend."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    if tokenizer not in _BACKENDS:
        from tokenizers import Tokenizer

        copy = Tokenizer.from_str(backend.to_str())
        copy.post_processor = None
        copy.no_truncation()
        copy.no_padding()
        _BACKENDS[tokenizer] = copy
    return _BACKENDS[tokenizer]


def _encode(backend: Any, texts: Sequence[str]) -> list[Encoded]:
    """Ids and offsets of many texts in one batched call (transformers' `__call__` would wrap every encoding in
    Python dicts, about half of the tokenizing time)."""
    return [(e.ids, e.offsets) for e in backend.encode_batch(list(texts), add_special_tokens=False)]


def _added_ids(tokenizer: Any, backend: Any) -> frozenset[int]:
    """Ids of the tokenizer's added tokens (special or not): the text is split at them before tokenizing."""
    if tokenizer not in _ADDED:
        _ADDED[tokenizer] = frozenset(backend.get_added_tokens_decoder())
    return _ADDED[tokenizer]


def _byte_level(tokenizer: Any, backend: Any) -> bool:
    """Whether the pre-tokenizer is byte-level (GPT-2 style regex, no prefix space): a token then starts at every
    whitespace run that follows a non-space, unless a pre-token spans it (which the offsets show)."""
    if tokenizer not in _BYTE_LEVEL:
        pre = backend.pre_tokenizer
        text = pre.__getstate__().decode() if pre is not None else ""
        _BYTE_LEVEL[tokenizer] = '"ByteLevel"' in text and '"add_prefix_space":true' not in text
    return _BYTE_LEVEL[tokenizer]


def _anchor(whole: Encoded, text: str, prompt_end: int, added: frozenset[int], byte_level: bool) -> tuple[int, int]:
    """(character, token index) from which the prompt's own tokens can differ from the whole text's: the last
    added token before `prompt_end` (the text is split there first), or for byte-level tokenizers a later
    whitespace run after a non-space where a whole-text token starts (pre-tokens never cross it). A wrong
    anchor can only make the comparison fail, and a failure is confirmed on the whole prompt (`_exact`)."""
    ids, offsets = whole
    starts = [o[0] for o in offsets]
    k = bisect_left(starts, prompt_end)
    found = (0, 0)
    for j in range(k - 1, -1, -1):
        if ids[j] in added:
            found = (offsets[j][0], j)
            break
    if byte_level:
        for j in range(k - 1, found[1], -1):
            p = starts[j]
            if 0 < p and text[p].isspace() and not text[p - 1].isspace():
                return p, j
    return found


def _boundaries(segs: list[Segment]) -> list[int]:
    """Character offsets where one segment ends and the next begins."""
    out, pos = [], 0
    for s in segs[:-1]:
        pos += len(s.text)
        out.append(pos)
    return out


def _straddled(offsets: list[tuple[int, int]], boundaries: Sequence[int]) -> set[int]:
    starts = [o[0] for o in offsets]
    out = set()
    for b in boundaries:
        j = bisect_left(starts, b)  # the first token starting at or after b; the one before starts before b
        if j > 0 and offsets[j - 1][1] > b:
            out.add(b)
    return out


def _exact(
    backend: Any,
    text: str,
    boundaries: list[int],
    prompt_end: int,
    whole: Encoded,
    anchor: int,
    tail_ids: list[int],
) -> tuple[list[int], list[tuple[int, int]], int]:
    """The whole-text ids, cut where rules 1 and 2 of the module docstring say; returns ids, offsets, cuts.
    `tail_ids`: the prompt's own ids from token `anchor` on (see `_anchor`)."""
    ids, offsets = whole
    cuts = _straddled(offsets, boundaries)
    if prompt_end and prompt_end not in cuts:
        k = bisect_left([o[0] for o in offsets], prompt_end)
        if ids[anchor:k] != tail_ids and ids[:k] != _encode(backend, [text[:prompt_end]])[0][0]:
            cuts.add(prompt_end)
    while cuts:  # rare: tokenise the pieces between cuts; a cut can expose another straddle inside a piece
        edges = [0, *sorted(cuts), len(text)]
        pieces = _encode(backend, [text[a:b] for a, b in zip(edges, edges[1:])])
        ids, offsets = [], []
        for a, (piece_ids, piece_offsets) in zip(edges, pieces):
            ids += piece_ids
            offsets += [(s + a, e + a) for s, e in piece_offsets]
        more = _straddled(offsets, [b for b in boundaries if b not in cuts])
        if not more:
            break
        cuts |= more
    return ids, offsets, len(cuts)


def _per_segment(tokenizer: Any, segs: list[Segment]) -> Encoded:
    """Slow tokenizers (no offsets): each segment tokenised on its own; offsets are per-segment placeholders."""
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    pos = 0
    for s in segs:
        tok = tokenizer(s.text, add_special_tokens=False)["input_ids"] if s.text else []
        ids += tok
        offsets += [(pos, pos + len(s.text))] * len(tok)
        pos += len(s.text)
    return ids, offsets


def _token_ranges(segs: list[Segment], offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The tokens [lo, hi) of each segment: those whose first character is in it."""
    starts = [o[0] for o in offsets]
    out, pos = [], 0
    lo = 0
    for s in segs:
        pos += len(s.text)
        hi = bisect_left(starts, pos, lo)
        out.append((lo, hi))
        lo = hi
    if out:
        out[-1] = (out[-1][0], len(offsets))
    return out


def _weighted_row(
    segs: list[Segment], ranges: list[tuple[int, int]], ex: Example, ids: list[int], weights: RoleWeights, cuts: int
) -> Rendered:
    r = Rendered(list(ids), [], [], [], ex.location, [], cuts)
    for s, (lo, hi) in zip(segs, ranges):
        n = hi - lo
        w = weights.for_segment(s.role, s.is_response, s.weight, s.span) * ex.sample_weight
        if w > MAX_WEIGHT:  # each factor is bounded, their product need not be
            raise DataError(
                ex.location,
                f"the weight of these tokens (role x message x span x sample weight) is {w:.3g}, above "
                f"{MAX_WEIGHT:.0e}: {TOO_LARGE}",
                f"messages[{s.message}].weight" if s.message is not None else "sample_weight",
            )
        r.weights += [w] * n
        r.roles += [s.role] * n
        r.response += [s.is_response] * n
        r.spans += [s.span or ""] * n
    if r.weights:
        r.weights[0] = 0.0  # nothing predicts the first token
    return r


def _check_decodes(
    tokenizer: Any, segs: list[Segment], ranges: list[tuple[int, int]], ids: list[int], ex: Example
) -> None:
    """The tokens of each response and span decode back to exactly its text."""
    for s, (lo, hi) in zip(segs, ranges):
        if s.span and not _decodes(tokenizer, ids, lo, hi, s.text):
            raise DataError(
                ex.location,
                f"the tokens of a {s.span} span do not decode back to its text "
                f"({_decoder(tokenizer)(ids[lo:hi])[:60]!r} vs {s.text[:60]!r}); the tokenizer normalises text, so "
                "the span's weight would not fall exactly on it",
                f"messages[{s.message}].content",
                kind="template",
            )
    responses = [(s, rng) for s, rng in zip(segs, ranges) if s.is_response]
    if not all(_decodes(tokenizer, ids, lo, hi, s.text) for s, (lo, hi) in responses):
        got = "".join(_decoder(tokenizer)(ids[lo:hi]) for _, (lo, hi) in responses)
        want = "".join(s.text for s, _ in responses)
        raise DataError(
            ex.location,
            f"response tokens do not decode back to the response text ({got[:60]!r} vs {want[:60]!r}); the "
            "tokenizer normalises text, so the prompt/response boundary would not be exact",
            "response",
            kind="template",
        )


def _decodes(tokenizer: Any, ids: list[int], lo: int, hi: int, text: str) -> bool:
    """Whether ids[lo:hi] decode to `text`. Decoders that drop the leading space of a decoded sequence
    (SentencePiece) are checked with the token before as context."""
    decode = _decoder(tokenizer)
    if decode(ids[lo:hi]) == text:
        return True
    if lo == 0:
        return False
    context = decode(ids[lo - 1 : lo])
    both = decode(ids[lo - 1 : hi])
    return both.startswith(context) and both[len(context) :] == text


def _decoder(tokenizer: Any) -> Any:
    """The raw decoder: the Rust backend's (no clean-up of spaces, special tokens kept), else transformers'."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return lambda ids: backend.decode(ids, skip_special_tokens=False)
    return lambda ids: tokenizer.decode(ids, clean_up_tokenization_spaces=False)
