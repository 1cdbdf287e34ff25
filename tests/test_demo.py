"""`witune demo`: the synthetic fallback data, the data choice, and the whole demo on a tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from witune.analysis import paired
from witune.data import load_examples
from witune.train import synthetic
from witune.workflows import demo


def test_synthetic_answers_are_checkable():
    recs = synthetic.generate(40, seed=1)
    assert recs == synthetic.generate(40, seed=1) and recs != synthetic.generate(40, seed=2)
    assert {r["task"] for r in recs} == set(synthetic.TASKS)
    for r in recs:
        assert synthetic.check(r, r["output"])
        if r["task"] == "add":
            a, b = map(int, r["input"].split(" + "))
            assert int(r["answer"]) == a + b
        if r["task"] == "sort":
            assert r["answer"] == ", ".join(map(str, sorted(int(x) for x in r["input"].split(", "))))
        if r["task"] == "reverse":
            assert r["answer"][::-1] == r["input"]
    assert not synthetic.check(recs[0], "no idea")


def test_synthetic_file_loads_as_alpaca(tmp_path):
    path = synthetic.write_jsonl(tmp_path / "s.jsonl", 12)
    loaded = load_examples(path)
    assert len(loaded.examples) == 12 and not loaded.skipped


def test_data_choice(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    (shared / "train").mkdir(parents=True)
    (shared / demo.SHARED_FILE).write_text("{}\n")
    monkeypatch.setenv("WITUNE_SHARED_DATA", str(shared))
    assert demo.find_shared_data() == shared.resolve()
    assert demo.demo_data(tmp_path / "out", 10) == (str(shared.resolve() / demo.SHARED_FILE), "real")
    # no shared data anywhere: a generated file inside the output folder
    monkeypatch.setattr(demo, "find_shared_data", lambda: None)
    path, kind = demo.demo_data(tmp_path / "out", 10)
    assert kind == "synthetic" and Path(path).is_file() and str(tmp_path / "out") in path
    assert demo.demo_data(tmp_path, 10, data="x.jsonl") == ("x.jsonl", "given")


def test_demo_on_tiny_model(tmp_path, monkeypatch, capsys):
    from witune.cli.main import main
    from witune.models.tiny import make_tiny_model

    model = make_tiny_model(tmp_path / "tiny")
    monkeypatch.setattr(demo, "find_shared_data", lambda: None)  # exercise the synthetic path
    result = demo.run_demo(
        tmp_path / "demo",
        model=str(model),
        n_train=8,
        n_eval=4,
        max_length=64,
        batch_size=4,
        learning_rate=1e-3,
        progress=False,
    )
    assert result.data_kind == "synthetic" and result.n_eval == 4
    assert [s.name for s in result.settings] == ["conventional", "weighted"]
    for s in result.settings:
        assert s.steps == 2 and (Path(s.model_dir) / "model.safetensors").is_file()
        assert math.isfinite(s.heldout_response_nll) and math.isfinite(s.final_train_loss)
    # the pooled held-out score is the per-record one summed (one pass feeds both the totals and the paired SE)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from witune.data import RoleWeights, tokenize_examples
    from witune.eval.score import score, score_each

    tok = AutoTokenizer.from_pretrained(model)
    rows = tokenize_examples(load_examples(result.data).examples[8:12], tok, RoleWeights(1.0, 1.0), max_length=64).rows
    tuned = AutoModelForCausalLM.from_pretrained(result.settings[0].model_dir)
    from witune.train.setup import pad_id

    total, items = score_each(tuned, rows, pad_id(tok))
    pooled = score(tuned, rows, pad_id(tok), progress=False)
    assert total.response_nll_per_token == pytest.approx(pooled.response_nll_per_token, rel=1e-4)
    assert total.prompt_nll_per_token == pytest.approx(pooled.prompt_nll_per_token, rel=1e-4)
    assert items == pytest.approx(result.response_nll_items["conventional"], rel=1e-4) and len(items) == 4
    # the two settings train differently (prompt tokens count in one of them)
    assert result.settings[0].heldout_prompt_nll != result.settings[1].heldout_prompt_nll
    assert Path(result.plot).is_file()
    report = Path(result.report).read_text()
    assert report.count("<img") >= 2 and "conventional" in report and "weighted" in report
    summary = json.loads((tmp_path / "demo" / "demo_summary.json").read_text())
    assert summary["settings"][1]["prompt_weight"] == 0.1
    rows = demo.summary_rows(result)
    assert [r["model"] for r in rows] == ["base (untrained)", "conventional", "weighted"]
    # the command: same run, printed as a table with where everything went
    assert (
        main(
            [
                "demo",
                "--model",
                str(model),
                "--output-dir",
                str(tmp_path / "cli"),
                "--n-train",
                "4",
                "--n-eval",
                "2",
                "--max-length",
                "64",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "conventional" in out and "weighted" in out and "synthetic" in out
    assert (tmp_path / "cli" / "demo_summary.json").is_file()


@pytest.mark.slow
def test_demo_cli_smollm2_small(tmp_path, capsys):
    """The real command on SmolLM2 with fewer records (the full demo is timed by hand: see the train report)."""
    pytest.importorskip("gguf")
    from witune.cli.main import main

    try:
        from witune.models.smollm import smollm2_gguf_file

        smollm2_gguf_file()
    except Exception as e:  # noqa: BLE001 - the offline model package is optional
        pytest.skip(f"SmolLM2 is not available offline: {e}")
    assert (
        main(
            [
                "demo",
                "--output-dir",
                str(tmp_path / "demo"),
                "--n-train",
                "8",
                "--n-eval",
                "4",
                "--max-length",
                "128",
                "--benchmark-limit",
                "40",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "conventional" in out and "weighted" in out and "total time" in out
    summary = json.loads((tmp_path / "demo" / "demo_summary.json").read_text())
    assert [s["name"] for s in summary["settings"]] == ["conventional", "weighted"]
    assert all(math.isfinite(s["heldout_response_nll"]) for s in summary["settings"])


def test_paired_difference_and_verdict():
    # planted: b beats a on 30 of 200 items and loses on 10 -> diff 0.1, paired SE from the discordant items
    a = [1.0] * 100 + [0.0] * 30 + [1.0] * 10 + [0.0] * 60
    b = [1.0] * 100 + [1.0] * 30 + [0.0] * 10 + [0.0] * 60
    d, se = paired.paired_difference(a, b)
    assert d == pytest.approx(0.1)
    assert se == pytest.approx(math.sqrt((0.2 - 0.01) / 199), rel=1e-9)  # var of d in {-1, 0, 1}, n - 1
    assert paired.verdict(d, se, better_if_lower=False) == "better"
    assert paired.verdict(0.01, se, better_if_lower=False) == "within noise"
    assert paired.verdict(-0.2, 0.05, better_if_lower=True) == "better"
    with pytest.raises(ValueError):
        paired.paired_difference([1.0], [1.0])


def test_headline_uses_response_nll_and_benchmark_not_prompt_nll():
    r = demo.DemoResult("o", "m", "d.jsonl", "real", 4, 3, 2.0, 3.0)
    r.settings = [
        demo.SettingResult("conventional", 0.0, 1.0, "", "", 1, 1.0, 2.0, 1.50, 1.0),
        demo.SettingResult("weighted", 0.1, 1.0, "", "", 1, 1.0, 1.0, 1.51, 1.0),
    ]
    # prompt NLL halves (the tautological "gain"); response NLL and accuracy do not move beyond noise
    r.response_nll_items = {"conventional": [1.4, 1.5, 1.6], "weighted": [1.45, 1.48, 1.60]}
    r.benchmark_items = {"conventional": [1.0, 0.0, 1.0, 1.0], "weighted": [1.0, 1.0, 1.0, 0.0]}
    r.benchmarks = {"conventional": [{"task": "witune_piqa", "metric": "acc", "value": 0.75}]}
    lines = demo.headline(r)
    assert lines[0].startswith("Held-out response NLL") and "within noise" in lines[0]
    assert lines[1].startswith("piqa accuracy") and "within noise" in lines[1] and "chance 0.5" in lines[1]
    assert lines[2].startswith("Diagnostics, not outcomes: held-out prompt NLL")
    # chance is the benchmark's own (1 / choices), and not claimed for a benchmark without a known value
    r.benchmarks = {"conventional": [{"task": "witune_arc_challenge", "metric": "acc", "value": 0.75}]}
    assert "items, chance 0.25)" in demo.headline(r)[1]
    r.benchmarks = {"conventional": [{"task": "witune_bbh", "metric": "acc", "value": 0.75}]}
    assert "chance" not in demo.headline(r)[1]


@pytest.mark.slow
def test_benchmark_items_match_the_harness_score(tiny_model_dir):
    """The per-item accuracies the paired SE uses are lm-eval's own: their mean is the harness's acc."""
    from witune.eval.items import harness_items

    shared = demo.find_shared_data()
    if shared is None or not (shared / "eval" / "piqa").is_dir():
        pytest.skip("shared PIQA files not present")
    rows, items = harness_items(str(tiny_model_dir), "witune_piqa", 12, str(shared / "eval"))
    acc = next(r["value"] for r in rows if r["metric"] == "acc")
    assert len(items) == 12 and set(items) <= {0.0, 1.0}
    assert sum(items) / 12 == pytest.approx(acc)
