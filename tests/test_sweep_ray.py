"""The Ray backend against a local Ray instance, and the slow SmolLM2-135M sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from witune.sweep import db, run_sweep
from witune.sweep.config import sweep_config_from_dict


def _config(tmp: Path, model: Path, shared: Path, datasets: list[str], plw: list[float], **extra):
    return sweep_config_from_dict(
        {
            "set": {
                "model": str(model),
                "limit": 8,
                "max_length": 64,
                "max_steps": 2,
                "per_device_batch_size": 2,
                "learning_rate": 1e-3,
                "warmup_ratio": 0.0,
                "save_every": 1,
                "save_total_limit": 1,
            },
            "datasets": datasets,
            "plw": plw,
            "eval_tasks": ["witune_piqa", "witune:generation_length"],
            "eval_limit": 2,
            "eval_num_fewshot": 0,
            "eval_max_new_tokens": 4,
            "eval_batch_size": 2,
            "eval_data_dir": str(shared / "eval"),
            "output_dir": str(tmp / "sweep"),
            **extra,
        }
    )


@pytest.mark.slow
def test_ray_backend_runs_points_and_records_a_training_failure(tmp_path, tiny_model_dir, shared_data, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    bad = tmp_path / "broken.jsonl"  # exists, so the trainer itself starts and fails with its own message
    bad.write_text(json.dumps({"instruction": "hi", "output": "there"}) + "\n{not json\n")
    good = str(shared_data / "train" / "alpaca_seed_tasks.jsonl")
    cfg = _config(tmp_path, tiny_model_dir, shared_data, [good, str(bad)], [0.1], backend="ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_sweep(cfg, progress=False)
    finally:
        ray.shutdown()
    assert (summary.points, summary.done, summary.failed) == (2, 1, 1)
    runs = {r["point"]["labels"]["dataset"]: r for r in db.runs(cfg.output_dir)}
    assert runs["alpaca_seed_tasks"]["status"] == "done"
    failed = runs["broken"]
    assert failed["status"] == "failed" and "training exited with code 2" in failed["error"]
    assert "broken.jsonl" in failed["error"] and "line 2" in failed["error"]  # the trainer's one-line error
    frame = db.results_frame(cfg.output_dir)
    assert set(frame["benchmark"]) == {"piqa"} and frame["dataset"].unique().tolist() == ["alpaca_seed_tasks"]


@pytest.mark.slow
def test_smollm2_sweep_of_two_points(tmp_path, smollm2_dir, shared_data, monkeypatch):
    """SmolLM2-135M, 2 PLWs on 2 workers, 2 steps each, harness eval limit 2: the realistic path end to end."""
    import time

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = _config(
        tmp_path,
        smollm2_dir,
        shared_data,
        [str(shared_data / "train" / "alpaca_seed_tasks.jsonl")],
        [0.0, 1.0],
        workers=2,
    )
    cfg.set["max_length"] = 128
    t0 = time.monotonic()
    summary = run_sweep(cfg, progress=False)
    print(f"SmolLM2 2-point sweep: {time.monotonic() - t0:.0f} s")
    assert (summary.done, summary.failed) == (2, 0)
    frame = db.results_frame(cfg.output_dir)
    print(
        frame[
            ["run_id", "prompt_weight", "benchmark", "metric", "score", "weight_distance", "generation_length"]
        ].to_string()
    )
    assert len(frame[frame.metric == "acc"]) == 2 and (frame["weight_distance"] > 0).all()
    # A second run of the same sweep with --resume has nothing left to do.
    again = run_sweep(cfg, resume=True, progress=False)
    assert (again.skipped, again.done) == (2, 0)
