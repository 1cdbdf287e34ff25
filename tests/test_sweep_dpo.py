"""A chained sweep on the tiny model: 2 weight points, each SFT then DPO (on self-play pairs built from real
records), evaluated after both stages; the database keeps both stages apart and `analyze` shows the gain
after DPO next to the SFT-only gain, with the robustness diagnostic beside the scores."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import yaml

from witune.sweep import db

pytest.importorskip("trl")


@pytest.mark.slow  # several processes (sweep workers, trainings, DPO, analyze)
def test_sft_then_dpo_sweep_records_both_stages(tmp_path, tiny_model_dir, shared_data):
    from witune.analysis.stages import stage_gains
    from witune.dpo.pairs import make_pairs
    from witune.workflows import read_dpo_stage, read_sweep_folder

    train_file = shared_data / "train" / "alpaca_seed_tasks.jsonl"
    pairs = make_pairs(
        str(train_file), str(tiny_model_dir), tmp_path / "pairs.jsonl", limit=8, max_new_tokens=6, progress=False
    )
    assert pairs.written >= 6
    gen_task = f"witune:generation={train_file}"
    cfg = {
        "set": {
            "model": str(tiny_model_dir),
            "data": str(train_file),
            "limit": 8,
            "max_length": 128,
            "max_steps": 2,
            "per_device_batch_size": 2,
            "learning_rate": 1e-3,
            "warmup_ratio": 0.0,
        },
        "weights": [[0.0, 1.0], [0.5, 1.0]],
        "dpo": {
            "data": str(pairs.path),
            "max_steps": 2,
            "per_device_batch_size": 2,
            "learning_rate": 1e-3,
            "warmup_ratio": 0.0,
            "eval_fraction": 0.25,
            "max_length": 256,
        },
        "eval_tasks": [gen_task, "witune:robustness=arc_challenge:shots=0:seeds=1:only=typos"],
        "eval_limit": 2,
        "eval_max_new_tokens": 4,
        "eval_batch_size": 2,
        "weight_distance": False,
        "output_dir": str(tmp_path / "sweep"),
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "WITUNE_EVAL_DATA": str(shared_data / "eval"),
    }
    r = subprocess.run(
        [sys.executable, "-m", "witune.cli.sweep", str(tmp_path / "sweep.yaml"), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
    )
    folder = tmp_path / "sweep"
    assert r.returncode == 0, r.stderr[-3000:] + str([x.get("error") for x in db.runs(folder)])
    runs = db.runs(folder)
    assert len(runs) == 2 and all(x["status"] == "done" for x in runs)
    for run in runs:
        tasks = {(m["stage"], m["task"]) for m in db.metrics(folder, run["run_id"])}
        assert ("sft", gen_task) in tasks and ("dpo", gen_task) in tasks and ("dpo", "dpo_pairs") in tasks
        assert (folder / "runs" / run["run_id"] / "dpo" / "model" / "config.json").is_file()

    sft, dpo = db.results_frame(folder, stage="sft"), db.results_frame(folder, stage="dpo")
    assert set(sft["stage"]) == {"sft"} and set(dpo["stage"]) == {"dpo"}
    assert set(sft["benchmark"]) == set(dpo["benchmark"]) == {gen_task}  # robustness and pair stats: columns only
    assert sft["robustness_drop"].notna().all() and dpo["robustness_drop"].notna().all()
    assert dpo["dpo_reward_margin"].notna().all() and sft["dpo_reward_margin"].isna().all()

    gains = stage_gains(read_sweep_folder(folder)[0], read_dpo_stage(folder))
    assert len(gains) == 2
    it = gains[(gains["prompt_weight"] == 0.0) & (gains["response_weight"] == 1.0)].iloc[0]
    assert it["gain_sft_pct"] == 0 or math.isnan(it["gain_sft_pct"])  # IT against itself (NaN if its score is 0)

    out = subprocess.run(
        [sys.executable, "-m", "witune.cli.main", "analyze", str(folder), "--json", "--bootstrap", "0"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert len(report["stage_gains"]) == 2 and len(report["robustness"]) == 2
