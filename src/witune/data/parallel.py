"""`tokenize_examples` spread over worker processes, giving exactly the single-process result.

Workers take contiguous shards and the shards are put back in order; with on_error="raise" the first error in
data order is raised, as single-process.

Why processes: chat templates are rendered by Jinja in Python, one example at a time, and the response decode
check is per example; fast tokenisers already use every core inside one batched call, so workers pay off
mainly for chat-template data and large files.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from tqdm.auto import tqdm

from witune.data.example import Example
from witune.data.pipeline import TokenizedData, tokenize_examples
from witune.data.weights import RoleWeights
from witune.errors import DataError

_MIN_SHARD = 64  # below this many examples per worker, process start-up costs more than it saves


def tokenize_parallel(
    examples: list[Example], tokenizer: Any, weights: RoleWeights, options: dict, workers: int, progress: bool
) -> TokenizedData:
    workers = max(1, min(workers, len(examples) // _MIN_SHARD))
    if workers == 1:
        return tokenize_examples(examples, tokenizer, weights, progress=progress, **options)
    size = -(-len(examples) // workers)
    shards = [examples[i : i + size] for i in range(0, len(examples), size)]
    # Workers are single-threaded tokenisers: N processes x Rayon threads would oversubscribe the cores.
    with ProcessPoolExecutor(len(shards), initializer=_worker_init) as pool:
        results = list(
            tqdm(
                pool.map(_worker, shards, [tokenizer] * len(shards), [weights] * len(shards), [options] * len(shards)),
                total=len(shards),
                desc="tokenizing (shards)",
                disable=not progress,
            )
        )
    out = TokenizedData([])
    for res in results:  # in data order: the first shard's error is the first error single-process would raise
        if res[0] == "error":
            raise res[1]
        part = res[1]
        out.rows += part.rows
        out.dropped_too_long += part.dropped_too_long
        out.truncated += part.truncated
        out.zero_trainable += part.zero_trainable
        out.skipped += part.skipped
        for kind, n in part.span_counts.items():
            out.span_counts[kind] = out.span_counts.get(kind, 0) + n
    return out


def _worker_init() -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _worker(shard: list[Example], tokenizer: Any, weights: RoleWeights, options: dict) -> tuple[str, Any]:
    # The error is returned, not raised, so that the parent re-raises it without the worker's remote traceback.
    try:
        return "ok", tokenize_examples(shard, tokenizer, weights, **options)
    except DataError as err:  # DataError pickles (DataError.__reduce__)
        return "error", err
