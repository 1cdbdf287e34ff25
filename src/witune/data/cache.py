"""Data preparation that scales: `tokenize_examples` spread over worker processes and cached on disk.

    data = prepare_examples(examples, tokenizer, weights, max_length=2048, workers=4, cache_dir="~/.cache/...")

The result is exactly what `tokenize_examples` returns for the same arguments (tests check it row by row):
workers take contiguous shards and the shards are put back in order; with on_error="raise" the first error in
data order is raised, as single-process. The cache key is a content hash of everything the result depends on:
the examples themselves (so the data file's content, not its name or date), the tokenizer (its vocabulary,
merges, normaliser, special tokens and chat template), template, weights, max_length, truncation,
final_turn_only, on_error and a format version. A changed byte anywhere gives a new key; stale entries are never
read. Entries are written atomically (temporary file + rename), so concurrent sweeps can share a cache folder.

Entries are plain arrays (`.npz` read with allow_pickle=False) plus a JSON header, never pickles: anyone who can
write the cache folder could otherwise run code in the next training by planting a pickle under the predictable
name. The worst a planted entry can now do is fail to load (it is then recomputed and replaced); the folder is
created private (0700) so that others cannot plant data either.

The worker processes live in `witune.data.parallel`.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from witune.data.example import Example
from witune.data.parallel import tokenize_parallel
from witune.data.pipeline import TokenizedData
from witune.data.weights import RoleWeights
from witune.errors import DataError, Location

# Bump when Rendered or the rendering rules change meaning (2: npz + JSON, no pickle; 3: error kind; 4: whole-text
# tokenising, Stanford's "### Response:", message / sample / span weights, per-token spans and cuts).
CACHE_VERSION = 4


def prepare_examples(
    examples: list[Example],
    tokenizer: Any,
    weights: RoleWeights,
    *,
    template: str = "auto",
    max_length: int | None = None,
    truncation: str = "left",
    final_turn_only: bool = False,
    on_error: str = "raise",
    workers: int = 1,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> TokenizedData:
    """`tokenize_examples` with optional worker processes and an optional on-disk cache (None: no cache)."""
    options = dict(
        template=template,
        max_length=max_length,
        truncation=truncation,
        final_turn_only=final_turn_only,
        on_error=on_error,
    )
    path = None
    if cache_dir is not None:
        key = cache_key(examples, tokenizer, weights, **options)
        path = Path(cache_dir).expanduser() / f"tokenized-{key}.npz"
        if path.exists():
            try:
                return _load(path, key)
            except Exception:  # noqa: BLE001 - a truncated, foreign or planted file: recompute and replace it
                pass
    data = tokenize_parallel(examples, tokenizer, weights, options, workers, progress)
    if path is not None:
        _save(path, key, data)
    return data


def cache_key(examples: list[Example], tokenizer: Any, weights: RoleWeights, **options: Any) -> str:
    """Hex sha256 of the examples' content, the tokenizer's content and every option that changes the rows."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {"version": CACHE_VERSION, "weights": asdict(weights), **options}, sort_keys=True, default=str
        ).encode()
    )
    h.update(tokenizer_fingerprint(tokenizer).encode())
    for ex in examples:
        h.update(
            json.dumps(
                [
                    ex.format,
                    str(ex.location),
                    [(m.role, m.content, m.weight) for m in ex.messages],
                    sorted(ex.fields.items()),
                    ex.sample_weight,
                ]
            ).encode()
        )
        h.update(b"\x00")
    return h.hexdigest()[:32]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """The tokenizer's content as text: the full tokenizers JSON (vocab, merges, normaliser, added tokens) for
    fast tokenizers, else its vocabulary, plus the special tokens and the chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = {
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "chat_template": getattr(tokenizer, "chat_template", None),
        "class": type(tokenizer).__name__,
    }
    return hashlib.sha256((body + json.dumps(extra, sort_keys=True, default=str)).encode()).hexdigest()


# Skipped records are stored in the cache entry's JSON header as plain lists (the entry holds no pickles).
def _error_parts(err: DataError) -> tuple:
    loc = err.location
    return ((loc.source, loc.index, loc.unit) if loc is not None else None, err.reason, err.field, err.kind)


def _error(parts: tuple | list) -> DataError:
    loc, reason, fld, kind = parts
    return DataError(Location(*loc) if loc is not None else None, reason, fld, kind=kind)


def _save(path: Path, key: str, data: TokenizedData) -> None:
    """One .npz: the rows' tokens, weights and flags concatenated (with offsets), role and source names as small
    tables in a JSON header, the counts and skipped records in the header too. Numbers only: nothing executes."""
    import numpy as np

    from witune.atomic import atomic_open

    rows = data.rows
    roles = sorted({r for row in rows for r in row.roles})
    spans = sorted({"", *(x for row in rows for x in row.spans)})  # "": outside spans
    sources = sorted({row.location.source for row in rows})
    units = sorted({row.location.unit for row in rows})
    role_ix, span_ix, src_ix, unit_ix = ({v: i for i, v in enumerate(t)} for t in (roles, spans, sources, units))
    header = {
        "version": CACHE_VERSION,
        "key": key,
        "roles": roles,
        "spans": spans,
        "span_counts": data.span_counts,
        "sources": sources,
        "units": units,
        "dropped_too_long": data.dropped_too_long,
        "truncated": data.truncated,
        "zero_trainable": [_error_parts(e) for e in data.zero_trainable],
        "skipped": [_error_parts(e) for e in data.skipped],
    }
    arrays: dict[str, np.ndarray] = {
        "header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
        "offsets": np.cumsum([0] + [len(r) for r in rows], dtype=np.int64),
        "input_ids": np.array([t for r in rows for t in r.input_ids], dtype=np.int64),
        "weights": np.array([w for r in rows for w in r.weights], dtype=np.float64),
        "roles": np.array([role_ix[x] for r in rows for x in r.roles], dtype=np.int32),
        "response": np.array([x for r in rows for x in r.response], dtype=np.bool_),
        "spans": np.array([span_ix[r.span_at(i)] for r in rows for i in range(len(r))], dtype=np.int32),
        "cuts": np.array([r.cuts for r in rows], dtype=np.int64),
        "loc": np.array(
            [(src_ix[r.location.source], r.location.index, unit_ix[r.location.unit]) for r in rows], dtype=np.int64
        ).reshape(len(rows), 3),
    }
    if not path.parent.exists():  # a new cache folder is private: only its owner can put entries into it
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub matches **kwargs against allow_pickle: bool
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())


def _load(path: Path, key: str) -> TokenizedData:
    import numpy as np

    from witune.data.render import Rendered

    with np.load(path, allow_pickle=False) as z:  # allow_pickle=False: object arrays raise instead of unpickling
        header = json.loads(z["header"].tobytes().decode())
        if header.get("version") != CACHE_VERSION or header.get("key") != key:
            raise ValueError("cache entry of another version or key")
        offsets = z["offsets"].tolist()
        ids, weights, roles, response = (z[k].tolist() for k in ("input_ids", "weights", "roles", "response"))
        cuts = z["cuts"].tolist()
        span_ids = z["spans"].tolist() if len(header["spans"]) > 1 else []  # only "" (no spans): not needed
        locs = z["loc"].tolist()
    names, span_names, sources, units = header["roles"], header["spans"], header["sources"], header["units"]
    rows = []
    for i, (a, b) in enumerate(itertools.pairwise(offsets)):
        src, index, unit = locs[i]
        rows.append(
            Rendered(
                ids[a:b],
                weights[a:b],
                [names[x] for x in roles[a:b]],
                response[a:b],
                Location(sources[src], index, units[unit]),
                [span_names[x] for x in span_ids[a:b]] if len(span_names) > 1 else [""] * (b - a),
                cuts[i],
            )
        )
    return TokenizedData(
        rows,
        header["dropped_too_long"],
        header["truncated"],
        [_error(e) for e in header["zero_trainable"]],
        [_error(e) for e in header["skipped"]],
        header["span_counts"],
    )
