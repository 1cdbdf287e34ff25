"""Best-fit-decreasing packing (`pack: bfd`, what `pack: true` means): every sample once, no row over
max_length, no more rows than in-order greedy, the same rows every time; and a packed step is the padded step."""

from __future__ import annotations

import random

import pytest
from test_train_invariance import _assert_same_step, _run, setup_dir  # noqa: F401  (setup_dir: a fixture)

from witune.data import pack, pack_bfd
from witune.data.render import Rendered
from witune.errors import ConfigError
from witune.train import load_config
from witune.train.batches import Schedule


def _rows(lengths: list[int]) -> list[Rendered]:
    """Rows of the given lengths; each row's token ids are its own index, so a row is recognisable in a bin."""
    return [Rendered([i] * n, [1.0] * n, ["response"] * n, [True] * n, f"row {i}") for i, n in enumerate(lengths)]


def _reference_bfd(lengths: list[int], max_length: int) -> list[list[int]]:
    """BFD written the slow, obvious way (scan every bin): row indices per bin."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        fits = [b for b in range(len(bins)) if room[b] >= lengths[i]]
        if fits:
            b = min(fits, key=lambda b: (room[b], b))
        else:
            b = len(bins)
            bins.append([])
            room.append(max_length)
        bins[b].append(i)
        room[b] -= lengths[i]
    return bins


def _indices(bins: list[list[Rendered]]) -> list[list[int]]:
    return [[r.input_ids[0] for r in b] for b in bins]


def _random_lengths(seed: int, n: int = 300, max_length: int = 512) -> list[int]:
    """Mixed lengths like instruction data: mostly short, a long tail up to max_length."""
    rng = random.Random(seed)
    return [min(max_length, max(1, int(rng.lognormvariate(4.8, 0.6)))) for _ in range(n)]


def test_bfd_beats_greedy_on_a_small_case():
    rows = _rows([6, 5, 5, 4])
    assert _indices(pack(rows, 10)) == [[0], [1, 2], [3]]  # greedy: in order, 3 rows
    assert _indices(pack(rows, 10, "bfd")) == [[0, 3], [1, 2]]  # 6+4 and 5+5: full rows


@pytest.mark.parametrize("seed", range(5))
def test_bfd_packs_every_sample_once_and_tighter(seed):
    lengths = _random_lengths(seed)
    rows = _rows(lengths)
    bins = pack_bfd(rows, 512)
    assert _indices(bins) == _reference_bfd(lengths, 512)
    assert sorted(i for b in _indices(bins) for i in b) == list(range(len(rows)))  # each exactly once
    assert all(sum(len(r) for r in b) <= 512 for b in bins)
    greedy, lower_bound = pack(rows, 512), -(-sum(lengths) // 512)
    assert len(bins) <= lower_bound + 1 < len(greedy)  # within a row of what any packing could do
    assert _indices(pack_bfd(rows, 512)) == _indices(bins)  # a pure function of the rows


def test_bfd_refuses_an_overlong_row():
    with pytest.raises(ValueError, match="does not fit max_length=8"):
        pack_bfd(_rows([3, 9]), 8)


def test_packed_schedule_is_seeded():
    """The rows are fixed; the seeded schedule decides which step trains which row: the same for a seed."""
    bins = pack_bfd(_rows(_random_lengths(0)), 512)
    steps = [Schedule(len(bins), 2, 2, 1, seed).step_indices(0, 3) for seed in (7, 7, 8)]
    assert steps[0] == steps[1] != steps[2]


@pytest.mark.parametrize(
    "value, parsed",
    [(True, "bfd"), (False, "none"), ("bfd", "bfd"), ("greedy", "greedy"), ("none", "none"), ("padding_free",) * 2],
)
def test_pack_setting(value, parsed):
    assert load_config(overrides={"data": "x", "pack": value}).pack == parsed


def test_bad_pack_setting_is_one_clear_line():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["data=x", "pack=first_fit"])
    assert str(e.value) == (
        "--set: key 'pack' must be none, greedy, bfd or padding_free (true = bfd, false = none), got 'first_fit'"
    )
    from witune.train.config import TrainConfig

    with pytest.raises(
        ConfigError, match="'pack' must be none, greedy, bfd or padding_free"
    ):  # a config built in Python too
        TrainConfig(data="x", pack=True).validate()  # type: ignore[arg-type]


def test_bfd_packed_step_equals_the_padded_step(setup_dir, tmp_path):  # noqa: F811
    """The 8 samples (7 to 113 tokens) in one step: padded batch 8, and bfd-packed into 3 rows of <= 121 tokens
    (greedy needs 4), once as one micro-batch and once as 3 micro-batches of 1 row. Same loss, same update."""
    kw = {"max_length": 121}
    full = _run(setup_dir, tmp_path, "nonzero", 8, 1, **kw)
    one = _run(setup_dir, tmp_path, "nonzero", 3, 1, pack="bfd", **kw)
    _assert_same_step(setup_dir, one, full)
    split = _run(setup_dir, tmp_path, "nonzero", 1, 3, pack="bfd", **kw)
    _assert_same_step(setup_dir, split, full)
    from witune.train.metrics import read_metrics

    runs = sorted(p for p in tmp_path.iterdir() if "packbfd" in p.name)
    assert [read_metrics(p / "metrics.jsonl")[0]["samples"] for p in runs] == [3, 3]  # 3 rows in the step


def test_padding_free_step_equals_the_padded_step(setup_dir, tmp_path):  # noqa: F811
    """padding_free keeps the unpacked schedule and joins each micro-batch into one row: the same samples, the
    same step as padded batches, at batch 8 x accumulation 1 and 2 x 4, with no padding in the rows."""
    kw = {"max_length": 121}
    full = _run(setup_dir, tmp_path, "nonzero", 8, 1, **kw)
    _assert_same_step(setup_dir, _run(setup_dir, tmp_path, "nonzero", 8, 1, pack="padding_free", **kw), full)
    _assert_same_step(setup_dir, _run(setup_dir, tmp_path, "nonzero", 2, 4, pack="padding_free", **kw), full)
    from witune.train.metrics import read_metrics

    runs = {p.name: read_metrics(p / "metrics.jsonl")[0] for p in tmp_path.iterdir() if p.name.startswith("nonzero")}
    padded, joined = runs["nonzero-b8-a1-max_length121"], runs["nonzero-b8-a1-packpadding_free-max_length121"]
    assert (joined["samples"], joined["tokens"]) == (padded["samples"], padded["tokens"])  # the same samples
    import torch

    from witune.train.engine import _Batcher

    units = [[r] for r in _rows([5, 3, 7])]
    row = _Batcher(units, 0, "padding_free", torch.device("cpu"))([2, 0, 1])
    assert row["input_ids"].shape == (1, 15) and row["position_ids"][0].tolist() == [*range(7), *range(5), *range(3)]
    assert _Batcher(units, 0, "none", torch.device("cpu"))([2, 0, 1])["input_ids"].shape == (3, 7)  # padded


def test_checkpoint_from_before_bfd_resumes_as_greedy():
    """Checkpoints written before bfd stored `pack: true`, which packed greedily: `pack: greedy` continues them,
    `pack: true` (now bfd, other rows) is refused naming the change."""
    from witune.train.runfolder import differing_settings

    old = {"pack": True}
    assert differing_settings(old, load_config(overrides={"data": "x", "pack": "greedy"})) == []
    assert differing_settings(old, load_config(overrides={"data": "x", "pack": True})) == ["pack 'greedy' -> 'bfd'"]
    assert differing_settings({"pack": False}, load_config(overrides={"data": "x"})) == []
