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

Why processes: chat templates are rendered by Jinja in Python, one example at a time, and the response decode
check is per example; fast tokenisers already use every core inside one batched call, so workers pay off
mainly for chat-template data and large files.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from witune.data.errors import DataError, Location
from witune.data.example import Example
from witune.data.pipeline import TokenizedData, tokenize_examples
from witune.data.weights import RoleWeights

CACHE_VERSION = 2  # bump when Rendered or the rendering rules change meaning (2: npz + JSON, no pickle)
_MIN_SHARD = 64  # below this many examples per worker, process start-up costs more than it saves


def prepare_examples(examples: list[Example], tokenizer: Any, weights: RoleWeights, *, template: str = "auto",
                     max_length: int | None = None, truncation: str = "left", final_turn_only: bool = False,
                     on_error: str = "raise", workers: int = 1, cache_dir: str | Path | None = None,
                     progress: bool = False) -> TokenizedData:
    """`tokenize_examples` with optional worker processes and an optional on-disk cache (None: no cache)."""
    options = dict(template=template, max_length=max_length, truncation=truncation,
                   final_turn_only=final_turn_only, on_error=on_error)
    path = None
    if cache_dir is not None:
        key = cache_key(examples, tokenizer, weights, **options)
        path = Path(cache_dir).expanduser() / f"tokenized-{key}.npz"
        if path.exists():
            try:
                return _load(path, key)
            except Exception:  # noqa: BLE001 - a truncated, foreign or planted file: recompute and replace it
                pass
    data = _tokenize_parallel(examples, tokenizer, weights, options, workers, progress)
    if path is not None:
        _save(path, key, data)
    return data


def cache_key(examples: list[Example], tokenizer: Any, weights: RoleWeights, **options: Any) -> str:
    """Hex sha256 of the examples' content, the tokenizer's content and every option that changes the rows."""
    h = hashlib.sha256()
    h.update(json.dumps({"version": CACHE_VERSION, "weights": asdict(weights), **options}, sort_keys=True,
                        default=str).encode())
    h.update(tokenizer_fingerprint(tokenizer).encode())
    for ex in examples:
        h.update(json.dumps([ex.format, str(ex.location), [(m.role, m.content) for m in ex.messages],
                             sorted(ex.fields.items())]).encode())
        h.update(b"\x00")
    return h.hexdigest()[:32]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """The tokenizer's content as text: the full tokenizers JSON (vocab, merges, normaliser, added tokens) for
    fast tokenizers, else its vocabulary, plus the special tokens and the chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = {"special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
             "chat_template": getattr(tokenizer, "chat_template", None), "class": type(tokenizer).__name__}
    return hashlib.sha256((body + json.dumps(extra, sort_keys=True, default=str)).encode()).hexdigest()


def _tokenize_parallel(examples: list[Example], tokenizer: Any, weights: RoleWeights, options: dict,
                       workers: int, progress: bool) -> TokenizedData:
    workers = max(1, min(workers, len(examples) // _MIN_SHARD))
    if workers == 1:
        return tokenize_examples(examples, tokenizer, weights, progress=progress, **options)
    size = -(-len(examples) // workers)
    shards = [examples[i : i + size] for i in range(0, len(examples), size)]
    # Workers are single-threaded tokenisers: N processes x Rayon threads would oversubscribe the cores.
    with ProcessPoolExecutor(len(shards), initializer=_worker_init) as pool:
        results = list(tqdm(pool.map(_worker, shards, [tokenizer] * len(shards), [weights] * len(shards),
                                     [options] * len(shards)), total=len(shards), desc="tokenizing (shards)",
                            disable=not progress))
    out = TokenizedData([])
    for res in results:  # in data order: the first shard's error is the first error single-process would raise
        if res[0] == "error":
            raise _error(res[1])
        part = _from_plain(res[1])
        out.rows += part.rows
        out.dropped_too_long += part.dropped_too_long
        out.truncated += part.truncated
        out.zero_trainable += part.zero_trainable
        out.skipped += part.skipped
    return out


def _worker_init() -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _worker(shard: list[Example], tokenizer: Any, weights: RoleWeights, options: dict) -> tuple[str, Any]:
    try:
        return "ok", _to_plain(tokenize_examples(shard, tokenizer, weights, **options))
    except DataError as err:  # DataError does not survive pickling (custom __init__): send its parts
        return "error", _error_parts(err)


# DataError cannot be unpickled by default (its __init__ takes location/message/field), so errors travel and
# are stored as plain tuples.
def _error_parts(err: DataError) -> tuple:
    loc = err.location
    return ((loc.source, loc.index, loc.unit) if loc is not None else None, err.reason, err.field)


def _error(parts: tuple) -> DataError:
    loc, reason, fld = parts
    return DataError(Location(*loc) if loc is not None else None, reason, fld)


def _to_plain(data: TokenizedData) -> dict:
    return {"rows": data.rows, "dropped_too_long": data.dropped_too_long, "truncated": data.truncated,
            "zero_trainable": [_error_parts(e) for e in data.zero_trainable],
            "skipped": [_error_parts(e) for e in data.skipped]}


def _from_plain(d: dict) -> TokenizedData:
    return TokenizedData(d["rows"], d["dropped_too_long"], d["truncated"], [_error(e) for e in d["zero_trainable"]],
                         [_error(e) for e in d["skipped"]])


def _save(path: Path, key: str, data: TokenizedData) -> None:
    """One .npz: the rows' tokens, weights and flags concatenated (with offsets), role and source names as small
    tables in a JSON header, the counts and skipped records in the header too. Numbers only: nothing executes."""
    import numpy as np

    from witune.atomic import atomic_open

    rows = data.rows
    roles = sorted({r for row in rows for r in row.roles})
    sources = sorted({row.location.source for row in rows})
    units = sorted({row.location.unit for row in rows})
    role_ix, src_ix, unit_ix = ({v: i for i, v in enumerate(t)} for t in (roles, sources, units))
    header = {"version": CACHE_VERSION, "key": key, "roles": roles, "sources": sources, "units": units,
              "dropped_too_long": data.dropped_too_long, "truncated": data.truncated,
              "zero_trainable": [_error_parts(e) for e in data.zero_trainable],
              "skipped": [_error_parts(e) for e in data.skipped]}
    arrays = {
        "header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
        "offsets": np.cumsum([0] + [len(r) for r in rows], dtype=np.int64),
        "input_ids": np.array([t for r in rows for t in r.input_ids], dtype=np.int64),
        "weights": np.array([w for r in rows for w in r.weights], dtype=np.float64),
        "roles": np.array([role_ix[x] for r in rows for x in r.roles], dtype=np.int32),
        "response": np.array([x for r in rows for x in r.response], dtype=np.bool_),
        "loc": np.array([(src_ix[r.location.source], r.location.index, unit_ix[r.location.unit]) for r in rows],
                        dtype=np.int64).reshape(len(rows), 3),
    }
    if not path.parent.exists():  # a new cache folder is private: only its owner can put entries into it
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
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
        locs = z["loc"].tolist()
    names, sources, units = header["roles"], header["sources"], header["units"]
    rows = []
    for i, (a, b) in enumerate(itertools.pairwise(offsets)):
        src, index, unit = locs[i]
        rows.append(Rendered(ids[a:b], weights[a:b], [names[x] for x in roles[a:b]], response[a:b],
                             Location(sources[src], index, units[unit])))
    return TokenizedData(rows, header["dropped_too_long"], header["truncated"],
                         [_error(e) for e in header["zero_trainable"]], [_error(e) for e in header["skipped"]])
