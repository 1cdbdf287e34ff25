"""Scalable data preparation: worker processes and the content-hash cache give exactly the single-process rows."""

import pytest

from witune.data import DataError, Example, Location, Message, RoleWeights, tokenize_examples
from witune.data.cache import cache_key, prepare_examples

WEIGHTS = RoleWeights(prompt=0.1, response=1.0, roles={"system": 0.0, "template": 0.0})


def tiny_tokenizer(vocab_size: int = 320):
    # Only the tokenizer of the tiny fixture: building its model too is needless here.
    from witune.models.tiny import _train_tokenizer

    return _train_tokenizer(vocab_size, chat_template=True)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def examples(n: int, bad_at: int | None = None) -> list[Example]:
    out = []
    for i in range(n):
        msgs = [
            Message("user", f"question {i} " + "word " * (i % 17)),
            Message("assistant", f"answer {i} " * (1 + i % 5)),
        ]
        if i % 3 == 0:
            msgs.insert(0, Message("system", "be brief"))
        if i == bad_at:
            # a system prompt (weight 0) so long that right truncation leaves no trainable token
            msgs = [Message("system", "long " * 80), Message("user", "q"), Message("assistant", "ok")]
        out.append(Example(tuple(msgs), "messages", Location("mem.jsonl", i + 1, "line")))
    return out


def same(a, b):
    assert [(r.input_ids, r.weights, r.roles, r.response, r.location) for r in a.rows] == [
        (r.input_ids, r.weights, r.roles, r.response, r.location) for r in b.rows
    ]
    assert (a.truncated, a.dropped_too_long) == (b.truncated, b.dropped_too_long)
    assert [str(e) for e in a.skipped + a.zero_trainable] == [str(e) for e in b.skipped + b.zero_trainable]


@pytest.mark.parametrize("truncation", ["right", "drop"])
def test_workers_and_cache_equal_single_process(tokenizer, tmp_path, truncation):
    exs = examples(300, bad_at=150)
    opts = dict(max_length=100, truncation=truncation, on_error="skip")
    single = tokenize_examples(exs, tokenizer, WEIGHTS, **opts)
    assert 0 < single.truncated + single.dropped_too_long < len(exs)  # the truncation path is exercised
    assert single.zero_trainable or truncation == "drop"
    parallel = prepare_examples(exs, tokenizer, WEIGHTS, workers=3, **opts)
    same(parallel, single)
    first = prepare_examples(exs, tokenizer, WEIGHTS, workers=2, cache_dir=tmp_path, **opts)
    files = list(tmp_path.glob("tokenized-*.npz"))
    assert len(files) == 1
    cached = prepare_examples(exs, tokenizer, WEIGHTS, cache_dir=tmp_path, **opts)
    same(first, single)
    same(cached, single)
    assert all(isinstance(e, DataError) for e in cached.zero_trainable)


def test_cache_is_read_not_recomputed(tokenizer, tmp_path, monkeypatch):
    exs = examples(20)
    prepare_examples(exs, tokenizer, WEIGHTS, cache_dir=tmp_path)
    import witune.data.parallel as parallel_mod

    def boom(*a, **k):
        raise AssertionError("recomputed despite a cache entry")

    monkeypatch.setattr(parallel_mod, "tokenize_examples", boom)
    assert len(prepare_examples(exs, tokenizer, WEIGHTS, cache_dir=tmp_path).rows) == 20


def test_cache_key_follows_content(tokenizer, tmp_path):
    exs = examples(10)
    base = cache_key(exs, tokenizer, WEIGHTS, max_length=64)
    assert base == cache_key(examples(10), tokenizer, WEIGHTS, max_length=64)  # content, not identity
    changed = list(exs)
    changed[4] = Example((Message("user", "q"), Message("assistant", "a.")), "messages", exs[4].location)
    assert cache_key(changed, tokenizer, WEIGHTS, max_length=64) != base
    assert cache_key(exs, tokenizer, RoleWeights(prompt=0.2), max_length=64) != base
    assert cache_key(exs, tokenizer, WEIGHTS, max_length=65) != base
    assert cache_key(exs, tiny_tokenizer(330), WEIGHTS, max_length=64) != base  # other merges
    other = tiny_tokenizer()
    other.chat_template = tokenizer.chat_template + " "
    assert cache_key(exs, other, WEIGHTS, max_length=64) != base


def test_parallel_raise_names_first_bad_record(tokenizer):
    exs = examples(400, bad_at=321)
    with pytest.raises(DataError, match="line 322"):
        prepare_examples(exs, tokenizer, WEIGHTS, workers=3, max_length=100, truncation="right")


def test_corrupt_cache_entry_is_recomputed(tokenizer, tmp_path):
    exs = examples(12)
    prepare_examples(exs, tokenizer, WEIGHTS, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("tokenized-*.npz")
    entry.write_bytes(b"not an npz")
    again = prepare_examples(exs, tokenizer, WEIGHTS, cache_dir=tmp_path)
    same(again, tokenize_examples(exs, tokenizer, WEIGHTS))


class _Payload:
    """A pickle that, when loaded, creates the file `marker` (stands for any code an attacker would run)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_pickle_in_the_cache_is_never_loaded(tokenizer, tmp_path):
    """Security: an entry planted under the cache's predictable name (old .pkl, new .npz, or an .npz holding a
    pickled object array) must never execute; it is recomputed and replaced by a plain-array entry."""
    import pickle

    import numpy as np

    exs = examples(12)
    key = cache_key(
        exs,
        tokenizer,
        WEIGHTS,
        template="auto",
        max_length=None,
        truncation="left",
        final_turn_only=False,
        on_error="raise",
    )
    cache = tmp_path / "cache"
    cache.mkdir()
    markers = [tmp_path / f"pwned-{i}" for i in range(3)]
    (cache / f"tokenized-{key}.pkl").write_bytes(pickle.dumps(_Payload(str(markers[0]))))
    (cache / f"tokenized-{key}.npz").write_bytes(pickle.dumps(_Payload(str(markers[1]))))
    got = prepare_examples(exs, tokenizer, WEIGHTS, cache_dir=cache)
    same(got, tokenize_examples(exs, tokenizer, WEIGHTS))
    # The replaced entry loads with numpy's pickle-free reader; now plant an object array inside a real npz.
    with np.load(cache / f"tokenized-{key}.npz", allow_pickle=False) as z:
        assert {"header", "input_ids", "weights"} <= set(z.files)
    with open(cache / f"tokenized-{key}.npz", "wb") as f:
        np.savez(f, header=np.array([_Payload(str(markers[2]))], dtype=object))
    again = prepare_examples(exs, tokenizer, WEIGHTS, cache_dir=cache)
    same(again, tokenize_examples(exs, tokenizer, WEIGHTS))
    assert not any(m.exists() for m in markers)


@pytest.mark.slow
def test_real_file_parallel_equals_single(tmp_path, smollm2_dir):
    from shared import shared_file

    from witune.data import load_examples
    from witune.models import load_tokenizer

    path = shared_file("lima_alpaca_format.json")
    tok = load_tokenizer(str(smollm2_dir))
    exs = load_examples(path).examples[:200]
    opts = dict(template="chat", max_length=512, on_error="skip")
    same(
        prepare_examples(exs, tok, WEIGHTS, workers=2, cache_dir=tmp_path, **opts),
        tokenize_examples(exs, tok, WEIGHTS, **opts),
    )
