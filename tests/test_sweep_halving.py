"""Successive halving (`search: halving`) on the tiny model and real records: rungs and promotions, a stopped
rung resumed equals an uninterrupted run, a sweep SIGKILLed during a rung resumes, stopped points stay out of
the analysis, and a later grid sweep extends a stopped point from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from witune.data.errors import ConfigError
from witune.results_schema import Labels
from witune.sweep import db, halving
from witune.sweep.config import rung_steps, sweep_config_from_dict
from witune.sweep.point import Point
from witune.train.config import TrainConfig
from witune.train.engine import train
from witune.train.metrics import read_metrics

PLWS = [0.0, 0.01, 0.1, 1.0]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "COLUMNS": "220",
    }


def _heldout(tmp: Path, shared: Path) -> Path:
    """Records 150-165 of the Alpaca seed tasks (the sweep trains on the first 8)."""
    lines = (shared / "train" / "alpaca_seed_tasks.jsonl").read_text().splitlines()[150:165]
    path = tmp / "heldout.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _train_keys(model: Path, shared: Path) -> dict:
    return {
        "model": str(model),
        "data": str(shared / "train" / "alpaca_seed_tasks.jsonl"),
        "limit": 8,
        "max_length": 64,
        "max_steps": 8,
        "per_device_batch_size": 2,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.25,
        "lr_scheduler": "cosine",
        "save_every": 0,
        "deterministic": True,
    }


def _sweep(tmp: Path, model: Path, shared: Path, **extra) -> dict:
    return {
        "set": _train_keys(model, shared),
        "plw": PLWS,
        "search": "halving",
        "halving_eta": 2,
        "halving_rungs": 3,
        "halving_heldout": str(_heldout(tmp, shared)),
        "halving_heldout_limit": 10,
        "eval_batch_size": 4,
        "weight_distance": False,
        "workers": 2,
        "output_dir": str(tmp / "sweep"),
        **extra,
    }


def _cmd(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "witune.cli.sweep", str(config), "--no-progress", *extra]


def test_rungs_and_refusals(tmp_path, tiny_model_dir, shared_data):
    assert rung_steps(27, 3, 3) == [3, 9, 27]
    assert rung_steps(8, 2, 3) == [2, 4, 8]
    cfg = sweep_config_from_dict(_sweep(tmp_path, tiny_model_dir, shared_data))
    assert cfg.rung_steps() == [2, 4, 8]
    refusals = {
        "too short": ({"halving_rungs": 4, "halving_eta": 3}, "each rung must train more steps"),
        "no heldout": ({"halving_heldout": None}, "halving_heldout"),
        "epochs": ({"set": {**_train_keys(tiny_model_dir, shared_data), "max_steps": 0}}, "max_steps > 0"),
    }
    for name, (change, text) in refusals.items():
        with pytest.raises(ConfigError, match=text):
            sweep_config_from_dict({**_sweep(tmp_path, tiny_model_dir, shared_data), **change})
        assert name


def test_promotion_ranks_configurations_with_seeds_as_replicates_and_variants_apart():
    """4 configurations x 2 seeds; two share (lambda_p, lambda_r) but differ in a weight axis (a variant): they are
    ranked apart. eta 2 keeps the 2 best means, every seed of each."""
    from witune.sweep.halving import promote

    points, scores = {}, {}
    truth = {(0.0, ""): 2.0, (0.1, ""): 1.0, (0.1, "span_weights.think=0.5"): 3.0, (1.0, ""): 1.5}
    for (plw, variant), nll in truth.items():
        for seed, noise in ((0, -0.05), (1, 0.05)):
            rid = f"{plw}-{variant}-{seed}"
            labels = Labels("m", "d", plw, 1.0, "nonzero", seed, variant)
            points[rid] = Point(rid, TrainConfig(), labels)
            scores[rid] = nll + noise
    kept = promote(scores, points, eta=2)
    assert kept == {"0.1--0", "0.1--1", "1.0--0", "1.0--1"}  # pooling the variant with (0.1, 1) would be 2.0


def test_stop_at_step_then_resume_equals_uninterrupted(tmp_path, tiny_model_dir, shared_data):
    keys = {**_train_keys(tiny_model_dir, shared_data), "progress": False, "prompt_weight": 0.1}
    stopped = TrainConfig(**keys, output_dir=str(tmp_path / "a"), stop_at_step=3)
    first = train(stopped)
    assert first.steps == 3 and (tmp_path / "a" / "checkpoints" / "step-3").is_dir()
    resumed = train(TrainConfig(**keys, output_dir=str(tmp_path / "a")), resume=True)
    assert resumed.resumed_from is not None and resumed.resumed_from.name == "step-3"
    train(TrainConfig(**keys, output_dir=str(tmp_path / "b")))
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)
    ma, mb = read_metrics(tmp_path / "a" / "metrics.jsonl"), read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [(m["step"], m["loss"], m["lr"]) for m in ma] == [(m["step"], m["loss"], m["lr"]) for m in mb]


def test_halving_sweep_killed_during_a_rung_resumes(tmp_path, tiny_model_dir, shared_data):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(_sweep(tmp_path, tiny_model_dir, shared_data)))
    folder = tmp_path / "sweep"
    proc = subprocess.Popen(_cmd(config), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while True:  # kill once a point has finished rung 0 while another is still training it
        rungs = db.rungs(folder) if (folder / "sweep.db").exists() else []
        if rungs and any(r["status"] == "running" for r in db.runs(folder)):
            break
        assert proc.poll() is None, "sweep ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no rung recorded in time"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    before = {(r["run_id"], r["rung"]): r for r in db.rungs(folder)}
    assert 1 <= len(before) < 4 + 2 + 1

    resumed = subprocess.run(_cmd(config, "--resume"), env=_env(), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "3 stopped early by successive halving" in resumed.stdout
    # rung 0 ends at step 2, the last of the 2 warmup steps: run as asked, with a warning
    assert "first rung ends at step 2, inside the 2-step warmup" in resumed.stderr
    # the overfitting warning follows the recorded scores (here they fall rung by rung: none; its doctest has a rise)
    rising = halving.rising_score_warning(db.rungs(folder))
    assert (rising is not None) == ("held-out response NLL rose between rungs" in resumed.stderr)

    rungs = db.rungs(folder)
    for r in rungs:  # recorded before the kill: not trained or scored again
        if (r["run_id"], r["rung"]) in before:
            assert r["score"] == before[(r["run_id"], r["rung"])]["score"]
    by_rung = {k: [r for r in rungs if r["rung"] == k] for k in range(3)}
    assert [len(by_rung[k]) for k in range(3)] == [4, 2, 1]
    assert [r["steps"] for r in rungs if r["rung"] == 0][0] == 2 and by_rung[2][0]["steps"] == 8
    assert sorted(r["decision"] for r in by_rung[0]) == ["promoted"] * 2 + ["stopped"] * 2
    assert sorted(r["decision"] for r in by_rung[1]) == ["promoted", "stopped"]
    assert by_rung[2][0]["decision"] == "final"
    for k in (0, 1):  # the promoted ones are the best of their rung
        promoted = [r["score"] for r in by_rung[k] if r["decision"] == "promoted"]
        assert max(promoted) <= min(r["score"] for r in by_rung[k] if r["decision"] == "stopped")
    status = {r["run_id"]: r["status"] for r in db.runs(folder)}
    winner = by_rung[2][0]["run_id"]
    assert status[winner] == "done" and sorted(status.values()) == ["done"] + ["stopped"] * 3
    # Tokens: each rung's count covers the steps trained so far, so the winner's grows rung by rung.
    assert 0 < by_rung[0][0]["tokens"] and [r["tokens"] for r in rungs if r["run_id"] == winner] == sorted(
        r["tokens"] for r in rungs if r["run_id"] == winner
    )

    # The winner, stopped twice and continued from its checkpoints, equals one uninterrupted training.
    point = Point.from_json(json.dumps(next(r["point"] for r in db.runs(folder) if r["run_id"] == winner)))
    ref = tmp_path / "reference"
    ref_cfg = point.train_config(ref)
    ref_cfg.progress = False
    (tmp_path / "reference.yaml").write_text(ref_cfg.to_yaml())
    train_cmd = [sys.executable, "-m", "witune.cli.train", str(tmp_path / "reference.yaml")]
    done = subprocess.run(train_cmd, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    a = load_file(str(folder / "runs" / winner / "model" / "model.safetensors"))
    b = load_file(str(ref / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)
    log = (folder / "runs" / winner / "train.log").read_text()
    assert "resuming from" in log and "step-4" in log

    # The analysis reads the finished point only, and says why the others are missing.
    from witune.workflows.analysis import halving_note

    frame, losses = db.results_frame(folder), db.losses_frame(folder)
    assert set(frame["run_id"]) <= {winner} and set(losses["run_id"]) == {winner}
    note = halving_note(folder)
    assert note is not None and note.startswith("3 point(s) stopped early")
    assert db.stopped_points(folder) == 3

    # `witune sweep status` shows each point's rungs: what it scored at each, and what that decided.
    from rich.console import Console

    from witune.sweep.status import status_table

    console = Console(record=True, width=300)
    console.print(status_table(folder))
    shown = console.export_text()
    loser = next(r for r in by_rung[0] if r["decision"] == "stopped")
    line = next(x for x in shown.splitlines() if loser["run_id"] in x)
    assert f"step 2: {loser['score']:.5g} stopped" in line
    assert f"step 8: {by_rung[2][0]['score']:.5g} final" in next(x for x in shown.splitlines() if winner in x)


def _outcome(folder: Path) -> tuple:
    """(status, rungs, result rows) of a sweep folder, keyed by PLW instead of run id."""
    plw = {r["run_id"]: r["point"]["labels"]["prompt_weight"] for r in db.runs(folder)}
    status = {plw[r["run_id"]]: r["status"] for r in db.runs(folder)}
    rungs = [
        (plw[r["run_id"]], r["rung"], r["steps"], r["score"], r["tokens"], r["decision"]) for r in db.rungs(folder)
    ]
    rows = [(plw[rid], row.task, row.metric, row.value) for rid, row in db.result_rows(folder)]
    return status, sorted(rungs), sorted(rows)


@pytest.mark.slow
def test_halving_on_ray_equals_local_and_a_grid_sweep_extends_a_stopped_point(
    tmp_path, tiny_model_dir, shared_data, monkeypatch
):
    """The same halving sweep (2 PLWs, rungs at 4 and 8 steps) on local workers and on Ray tasks, whose workers
    touch no database (the driver records every rung): the same rungs, scores, tokens, decisions and result rows.
    Then a `search: grid` sweep over the local folder trains the stopped point to the end from its checkpoint."""
    from witune.sweep import run_sweep

    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    def config(backend: str, search: str = "halving"):
        raw = _sweep(tmp_path, tiny_model_dir, shared_data, plw=[0.0, 1.0], halving_rungs=2, backend=backend)
        return sweep_config_from_dict({**raw, "search": search, "output_dir": str(tmp_path / backend)})

    summary = run_sweep(config("local"), progress=False)
    assert (summary.points, summary.done, summary.stopped, summary.failed) == (2, 1, 1, 0)
    local = _outcome(tmp_path / "local")
    status, rungs, rows = local
    assert sorted(status.values()) == ["done", "stopped"] and sorted(r[1:3] for r in rungs) == [(0, 4), (0, 4), (1, 8)]
    assert rows and {r[0] for r in rows} == {p for p, s in status.items() if s == "done"}

    stopped = next(r["run_id"] for r in db.runs(tmp_path / "local") if r["status"] == "stopped")
    run_sweep(config("local", "grid"), resume=True, progress=False)
    assert {r["status"] for r in db.runs(tmp_path / "local")} == {"done"}
    log = (tmp_path / "local" / "runs" / stopped / "train.log").read_text()
    assert "resuming from" in log and "step-4" in log  # rung 0 ended at max_steps // 2 = 4
    steps = [m["step"] for m in read_metrics(tmp_path / "local" / "runs" / stopped / "metrics.jsonl")]
    assert steps == list(range(1, 9))

    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_sweep(config("ray"), progress=False)
    finally:
        ray.shutdown()
    assert (summary.points, summary.done, summary.stopped, summary.failed) == (2, 1, 1, 0)
    assert _outcome(tmp_path / "ray") == local
