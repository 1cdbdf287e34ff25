"""bench/method.py, the shared method of the benchmarks: interleaving, load marks, spread, atomic results."""

import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench_method", Path(__file__).parent.parent / "bench" / "method.py")
method = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(method)


def test_repeats_interleave_variants_and_record_load(monkeypatch):
    order = []
    high = method.LOADED_ABOVE + 0.5
    loads = iter(
        [(0.5, 0, 0), (0.6, 0, 0), (0.7, 0, 0), (high, 0, 0), (0.1, 0, 0), (0.1, 0, 0), (0.1, 0, 0), (0.1, 0, 0)]
    )
    monkeypatch.setattr(method.os, "getloadavg", lambda: next(loads))
    runs = method.interleaved(
        {"a": lambda: order.append("a") or {"x": 1.0}, "b": lambda: order.append("b") or {"x": 2.0}},
        repeats=2,
        log=False,
    )
    assert order == ["a", "b", "a", "b"]
    assert [r["load_before"][0] for r in runs["a"]] == [0.5, 0.1]
    assert [r["loaded"] for r in runs["b"]] == [True, False]  # above LOADED_ABOVE after b's first run
    assert method.load_summary(runs["b"]) == {"load_min": 0.1, "load_max": high, "loaded": True}
    assert method.load_cell(method.load_summary(runs["b"])).endswith("*")


def test_spread_and_results_file(tmp_path):
    assert method.spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}
    out = tmp_path / "r" / "x.json"
    method.write_results(out, {"k": 1}, [{"loaded": True, "v": 2}])
    data = json.loads(out.read_text())
    assert data["meta"]["k"] == 1 and data["meta"]["any_loaded"] is True and data["rows"][0]["v"] == 2
    assert data["meta"]["loaded_above"] == method.LOADED_ABOVE
    assert [p.name for p in out.parent.iterdir()] == ["x.json"]  # no temporary left behind


def test_failed_case_names_itself(tmp_path):
    script = tmp_path / "boom.py"
    script.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(SystemExit, match="boom"):
        method.in_subprocess([str(script)])
