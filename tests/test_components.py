"""A component named in config reaches every process that trains: a dynamic weight defined in a user's module
(`tests/dynamic_rules.py`, by its path "dynamic_rules:EntropyWeight", with a constructor argument) in `witune train`
(a subprocess), in a sweep point on the local and the Ray backends, and in `WeightedSFTTrainer`: each step's loss
is the one computed directly from the rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dynamic_rules import EntropyWeight
from shared import alpaca_file, refused

from witune.data import pad_collate
from witune.loss import weighted_nll
from witune.sweep import db, run_sweep
from witune.sweep.config import sweep_config_from_dict
from witune.train import load_config, setup

TESTS = str(Path(__file__).resolve().parent)
RULE = {"dynamic_weight": "dynamic_rules:EntropyWeight", "dynamic_weight_args": {"alpha": 0.5}}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return alpaca_file(tmp_path / "tasks.jsonl", 4)


def _keys(model: Path, data: Path) -> dict:
    # one step over all 4 rows: the step's loss is sum(w f nll) / Z over the whole data, whatever the order
    return dict(model=str(model), data=str(data), max_steps=1, per_device_batch_size=4, max_length=64, **RULE)


def _direct_loss(keys: dict, rule) -> float:
    """The first step's loss computed here, by the rule itself, on the rows `witune train` trains."""
    cfg = load_config(None, {**keys, "output_dir": "unused"})
    tok = setup.load_tokenizer(cfg)
    rows = [u[0] for u in setup.load_units(cfg, tok, quiet=True)]
    batch = pad_collate(rows, setup.pad_id(tok))
    model = setup.load_model(cfg)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        sums = weighted_nll(logits, batch["labels"], batch["weights"], batch["response_mask"], dynamic=rule)
    return float(sums.weighted_sum / sums.normalizer("nonzero"))


def _first_loss(metrics: Path) -> float:
    return json.loads(metrics.read_text().splitlines()[0])["loss"]


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (TESTS, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_witune_train_builds_the_named_rule_with_its_arguments(tmp_path, data, tiny_model_dir, monkeypatch):
    keys = _keys(tiny_model_dir, data)
    expected = _direct_loss(keys, EntropyWeight(0.5))
    assert expected != pytest.approx(_direct_loss(keys, EntropyWeight(1.0)), rel=1e-4)  # alpha matters
    (tmp_path / "c.yaml").write_text(json.dumps({**keys, "output_dir": str(tmp_path / "run")}))
    cmd = [sys.executable, "-m", "witune.cli.train", str(tmp_path / "c.yaml")]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _first_loss(tmp_path / "run" / "metrics.jsonl") == pytest.approx(expected, rel=1e-5)
    recorded = (tmp_path / "run" / "config.yaml").read_text()  # what a resume and a sweep rebuild it from
    assert "dynamic_rules:EntropyWeight" in recorded and "alpha: 0.5" in recorded


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "ray"])
def test_a_sweep_point_builds_the_named_rule(tmp_path, data, tiny_model_dir, monkeypatch, backend):
    if backend == "ray":
        ray = pytest.importorskip("ray")
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])  # the workers and their trainings import the rule
    keys = _keys(tiny_model_dir, data)
    expected = _direct_loss(keys, EntropyWeight(0.5))
    cfg = sweep_config_from_dict(
        {"set": keys, "plw": [0.0], "backend": backend, "weight_distance": False, "output_dir": str(tmp_path / "s")}
    )
    if backend == "ray":
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_sweep(cfg, progress=False)
    finally:
        if backend == "ray":
            ray.shutdown()
    assert summary.done == 1, db.runs(cfg.output_dir)
    run_id = db.runs(cfg.output_dir)[0]["run_id"]
    assert _first_loss(Path(cfg.output_dir) / "runs" / run_id / "metrics.jsonl") == pytest.approx(expected, rel=1e-5)


def test_weighted_sft_trainer_uses_the_rule(tmp_path, data, tiny_model_dir):
    pytest.importorskip("trl")
    from trl import SFTConfig

    from witune.integrations import weighted_dataset
    from witune.integrations.trl import WeightedSFTTrainer

    keys = _keys(tiny_model_dir, data)
    expected = _direct_loss(keys, EntropyWeight(0.5))
    cfg = load_config(None, {**keys, "output_dir": "unused"})
    tok = setup.load_tokenizer(cfg)
    ds = weighted_dataset(data, tok, 0.0, 1.0, max_length=64)
    args = SFTConfig(
        output_dir=str(tmp_path / "t"), per_device_train_batch_size=4, max_steps=1, learning_rate=0.0,
        logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, bf16=False, disable_tqdm=True,
    )  # fmt: skip
    trainer = WeightedSFTTrainer(
        model=setup.load_model(cfg),
        args=args,
        train_dataset=ds,
        processing_class=tok,
        dynamic_weight=EntropyWeight(0.5),
    )
    assert trainer.train().training_loss == pytest.approx(expected, rel=1e-4)


def test_a_rule_that_does_not_build_is_one_line_before_training(tmp_path, data, tiny_model_dir, capsys):
    base = ["train", "--set", f"model={tiny_model_dir}", "--set", f"data={data}", "--set", f"output_dir={tmp_path}/r"]
    refused([*base, "--set", "dynamic_weight=no_such_module:Rule"], capsys, "no_such_module", "cannot be imported")
    refused([*base, "--set", "dynamic_weight=json:dumps"], capsys, "not a witune.loss.DynamicWeight subclass")
    bad_args = ["--set", "dynamic_weight=witune.loss.dynamic:DFT", "--set", "dynamic_weight_args={beta: 2}"]
    refused([*base, *bad_args], capsys, "cannot be built with {'beta': 2}")
    assert not (tmp_path / "r").exists()
