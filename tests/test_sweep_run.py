"""A real sweep on the tiny model: 4 points train on a real shared training file and are evaluated with the
harness on a real shared eval task; `witune sweep` is SIGKILLed mid-way and resumed. Four more points name a
data file with a malformed record: they fail, with their error recorded, and do not stop the others."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from witune.sweep import db
from witune.train.checkpoint import latest_checkpoint

PLWS = [0.0, 0.01, 0.1, 1.0]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "COLUMNS": "220",
    }  # rich: wide tables when not a tty


def _sweep_config(tmp: Path, model: Path, shared: Path, backend: str = "local") -> Path:
    train_file = shared / "train" / "alpaca_seed_tasks.jsonl"
    broken = tmp / "broken.jsonl"  # found only when its points train (a missing file is refused up front)
    broken.write_text(train_file.read_text().splitlines()[0] + '\n{"instruction": \n')
    cfg = {
        "set": {
            "model": str(model),
            "limit": 8,
            "max_length": 64,
            "max_steps": 3,
            "per_device_batch_size": 2,
            "learning_rate": 1e-3,
            "warmup_ratio": 0.0,
            "save_every": 1,
            "save_total_limit": 1,
        },
        "datasets": [str(train_file), str(broken)],
        "plw": PLWS,
        "eval_tasks": ["witune_piqa", "witune:generation_length"],
        "eval_limit": 2,
        "eval_num_fewshot": 0,
        "eval_max_new_tokens": 4,
        "eval_batch_size": 2,
        "eval_data_dir": str(shared / "eval"),
        "workers": 2,
        "backend": backend,
        "output_dir": str(tmp / "sweep"),
    }
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cmd(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "witune.cli.sweep", str(config), "--no-progress", *extra]


def _snapshot(folder: Path) -> dict[str, dict]:
    try:
        return {r["run_id"]: r for r in db.runs(folder)}
    except Exception:  # the database is being created
        return {}


def test_sweep_survives_sigkill_and_resumes_without_loss(tmp_path, tiny_model_dir, shared_data, capsys):
    config = _sweep_config(tmp_path, tiny_model_dir, shared_data)
    folder = tmp_path / "sweep"
    proc = subprocess.Popen(_cmd(config), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, killed_mid_training = time.monotonic() + 900, None  # generous: a shared, loaded CI machine
    both_seen = None  # when a point was first seen done while another ran
    while True:
        runs = _snapshot(folder) if (folder / "sweep.db").exists() else {}
        done = [r for r in runs.values() if r["status"] == "done"]
        running = [r for r in runs.values() if r["status"] == "running"]
        # Ideal moment: a point done and another one mid-training (has a checkpoint, no final model yet).
        mid = [
            r
            for r in running
            if latest_checkpoint(folder / "runs" / r["run_id"] / "checkpoints")
            and not (folder / "runs" / r["run_id"] / "model").exists()
        ]
        if done and mid:
            killed_mid_training = mid[0]["run_id"]
            break
        if done and running:
            both_seen = both_seen or time.monotonic()
            # On an idle machine the tiny model's steps take milliseconds and the mid-training window can be
            # missed: after a short wait, a kill while a point runs (training or evaluating) still tests resume.
            if time.monotonic() - both_seen > 1.0:
                break
        assert proc.poll() is None, "sweep ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, f"no point finished in time: {[r['status'] for r in runs.values()]}"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    before = _snapshot(folder)
    done_before = {rid: r for rid, r in before.items() if r["status"] == "done"}
    assert done_before and any(r["status"] == "running" for r in before.values())
    time.sleep(1.0)  # the workers and trainings die with the sweep: nothing changes the database any more
    assert _snapshot(folder) == before

    # Without --resume a second sweep refuses to mix into the first one.
    again = subprocess.run(_cmd(config), env=_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--resume" in again.stderr

    t0 = time.monotonic()
    resumed = subprocess.run(_cmd(config, "--resume"), env=_env(), capture_output=True, text=True, timeout=1200)
    print(f"resume took {time.monotonic() - t0:.0f} s\n{resumed.stdout}")
    assert resumed.returncode == 1, resumed.stderr[-3000:]  # 1: some points failed (the broken file)

    after = _snapshot(folder)
    assert len(after) == 8
    real = [rid for rid, r in after.items() if "broken" not in r["point"]["train"]["data"]]
    missing = [rid for rid in after if rid not in real]
    assert len(real) == 4 and all(after[rid]["status"] == "done" for rid in real)
    for rid in missing:  # failed, with the reason, and the other points went on
        assert after[rid]["status"] == "failed" and "broken.jsonl" in after[rid]["error"]
    for rid, r in done_before.items():  # finished before the kill: not run again
        assert after[rid]["finished"] == r["finished"] and after[rid]["attempts"] == 1
    if killed_mid_training:
        log = (folder / "runs" / killed_mid_training / "train.log").read_text()
        assert "resuming from" in log, log[-2000:]

    # Every metric exactly once per point: harness rows, generation length, weight distance.
    metrics = db.metrics(folder)
    keys = [(m["run_id"], m["task"], m["metric"]) for m in metrics]
    assert len(keys) == len(set(keys))
    for rid in real:
        got = {(m["task"], m["metric"]) for m in metrics if m["run_id"] == rid}
        assert {("witune_piqa", "acc"), ("witune:generation_length", "mean_tokens"), ("weight_distance", "l2")} <= got
    assert not [m for m in metrics if m["run_id"] in missing]
    frame = db.results_frame(folder)
    piqa = frame[(frame.benchmark == "piqa") & (frame.metric == "acc")]
    assert sorted(piqa["prompt_weight"]) == PLWS and piqa["score"].between(0, 1).all()
    assert (piqa["weight_distance"] > 0).all() and (piqa["generation_length"] >= 0).all()
    # Each point records its data's Rg (ratio of means, tokenizer of the model trained, the 8 records trained on)
    # as a column, so the GAM and the correlations can run on a sweep; it is not a benchmark row.
    from witune.data import load_examples
    from witune.stats import ratio_stats, sample_lengths
    from witune.stats.loading import get_tokenizer

    examples = load_examples(str(shared_data / "train" / "alpaca_seed_tasks.jsonl"), limit=8).examples
    expected_rg = ratio_stats(sample_lengths(examples, get_tokenizer(str(tiny_model_dir)))).ratio_of_means
    assert "rg" in frame.columns and "data_rg" not in set(frame["benchmark"])
    assert frame["rg"].notna().all() and (abs(frame["rg"] - expected_rg) < 1e-12).all()
    losses = db.losses_frame(folder)
    assert sorted(losses.groupby("run_id")["step"].apply(list).tolist()) == [[1, 2, 3]] * 4

    status = subprocess.run(
        [sys.executable, "-m", "witune.cli.sweep", "status", str(folder)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0 and "4 done" in status.stdout and "4 failed" in status.stdout
    print(status.stdout)

    # The analysis and the report read this real sweep folder as it is.
    from witune.cli.main import main

    capsys.readouterr()
    assert main(["analyze", str(folder), "--json", "--bootstrap", "10"]) == 0
    analysis = json.loads(capsys.readouterr().out)
    assert analysis["design"]["runs"] == 4 and analysis["design"]["prompt_weights"] == PLWS
    assert len(analysis["plw_fits"]) == 1  # 4 PLWs with response 1 on one data set: the quadratic fit runs
    report = tmp_path / "report.html"
    assert main(["report", str(folder), "-o", str(report), "--bootstrap", "10"]) == 0
    html = report.read_text()
    assert html.count("<img") >= 2 and "Recommendation" in html and "piqa" in html
