"""Span, role and dynamic weights as sweep axes (`weight_axes`): each value trains its own point, labels it
with a `variant`, and the analysis takes one variant at a time, never pooling runs of different weights."""

from __future__ import annotations

import pytest
from shared import make_sweep_db, run_cli

from witune.data.errors import ConfigError
from witune.sweep.config import sweep_config_from_dict
from witune.sweep.grid import expand

AXES = {"span_weights.think": [0.5, 1.0], "dynamic_weight": ["none", "dft"]}


def test_weight_axes_cross_the_grid_and_set_exactly_their_key():
    base = {"set": {"data": "d.jsonl", "span_weights": {"tool_call": 0.2}}, "plw": [0.0, 0.5]}
    points = expand(sweep_config_from_dict({**base, "weight_axes": AXES}))
    assert len(points) == 8 == len({p.run_id for p in points})
    seen = set()
    for p in points:
        # the axis sets one entry of span_weights; the entry the sweep's `set` gives stays
        assert p.train.span_weights == {"tool_call": 0.2, "think": p.train.span_weights["think"]}
        assert p.labels.variant == f"span_weights.think={p.train.span_weights['think']}, " + (
            f"dynamic_weight={p.train.dynamic_weight}"
        )
        seen.add((p.train.plw or p.train.prompt_weight, p.train.span_weights["think"], p.train.dynamic_weight))
    assert seen == {(w, t, d) for w in (0.0, 0.5) for t in (0.5, 1.0) for d in ("none", "dft")}
    # A sweep without weight axes keeps its ids (and its labels have no variant).
    plain = expand(sweep_config_from_dict(base))
    assert [p.run_id for p in plain] == [p.run_id for p in expand(sweep_config_from_dict({**base, "weight_axes": {}}))]
    assert all(p.labels.variant == "" for p in plain)
    assert sweep_config_from_dict({**base, "weight_axes": AXES}).n_points() == 8


@pytest.mark.parametrize(
    "axes, message",
    [
        ({"sample_weight": [0.5]}, "a weight axis is one of span_weights.<span>, role_weights.<role>, dynamic_weight"),
        ({"span_weights.think": []}, "needs a non-empty list"),
        ({"span_weights.think": 0.5}, "needs a non-empty list"),
        ({"role_weights.system": [0.0, "high"]}, "not numbers: ['high']"),
        ({"span_weights.think": [0.5, 0.5]}, "lists a value twice"),
        ({"dynamic_weight": ["dft", 1]}, "not names: [1]"),
    ],
)
def test_bad_weight_axes_are_one_line(axes, message):
    with pytest.raises(ConfigError, match="weight_axes") as e:
        sweep_config_from_dict({"set": {"data": "d.jsonl"}, "plw": [0.0], "weight_axes": axes})
    assert message in str(e.value)


def test_an_axis_value_the_trainer_refuses_is_refused_when_the_grid_is_built():
    cfg = sweep_config_from_dict({"set": {"data": "d.jsonl"}, "plw": [0.0], "weight_axes": {"dynamic_weight": ["x"]}})
    with pytest.raises(ConfigError, match="dynamic_weight' must be one of"):
        expand(cfg)
    cfg = sweep_config_from_dict({"set": {"data": "d.jsonl"}, "plw": [0.0], "weight_axes": {"span_weights.a": [2.0]}})
    with pytest.raises(ConfigError, match="above the papers' range"):
        expand(cfg)


def test_the_analysis_takes_one_variant_and_equals_a_sweep_of_that_variant_alone(tmp_path, capsys, monkeypatch):
    from witune.workflows import analyze_results

    both = tmp_path / "both"
    make_sweep_db(both, variant="span_weights.think=0.5", score=lambda i: 0.50 + 0.02 * i)
    make_sweep_db(both, variant="span_weights.think=1.0", score=lambda i: 0.70 - 0.03 * i)
    alone = make_sweep_db(tmp_path / "alone", variant="span_weights.think=1.0", score=lambda i: 0.70 - 0.03 * i)
    code, _, err = run_cli(["analyze", both, "--engine", "python"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "2 weight variants ('span_weights.think=0.5'; 'span_weights.think=1.0')" in err and "--variant" in err
    code, out, _ = run_cli(["analyze", both, "--engine", "python", "--variant", "span_weights.think=0.7"], capsys)
    assert code == 2
    chosen = analyze_results(both, engine="python", progress=False, variant="span_weights.think=1.0")
    reference = analyze_results(alone, engine="python", progress=False)
    assert chosen.notes[0].startswith("variant 'span_weights.think=1.0': only the runs")
    cols = ["prompt_weight", "simple", "relative"]
    assert chosen.aggregates[cols].equals(reference.aggregates[cols])
    assert chosen.best["prompt_weight"].tolist() == reference.best["prompt_weight"].tolist() == [0.0]
    other = analyze_results(both, engine="python", progress=False, variant="span_weights.think=0.5")
    assert other.best["prompt_weight"].tolist() == [pytest.approx(0.3)]  # its own optimum, not a pooled one
    monkeypatch.setenv("COLUMNS", "250")  # a table as wide as its cells
    code, out, _ = run_cli(["sweep", "status", both], capsys)
    assert code == 0 and "variant" in out and "span_weights.think=0.5" in " ".join(out.split())
