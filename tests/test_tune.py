"""`witune tune` on the tiny model: one answer from a budgeted search, a sweep folder underneath, resume after
SIGKILL with nothing retrained, bad input refused in one line before any training; halving's rank guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from shared import alpaca_file, refused

from witune.errors import ConfigError
from witune.sweep import db, halving
from witune.sweep.config import PLW_PAPER, sweep_config_from_dict
from witune.sweep.grid import expand
from witune.workflows.tune import TuneConfig, check_folder

STEPS = ["--set", "max_steps=3", "--set", "max_length=64", "--set", "per_device_batch_size=4"]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return alpaca_file(tmp_path / "tasks.jsonl", 60)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _status(folder: Path) -> dict[str, str]:
    if not db.db_path(folder).is_file():
        return {}
    try:
        return {r["run_id"]: r["status"] for r in db.runs(folder)}
    except Exception:  # noqa: BLE001 - the writer is mid-transaction: ask again
        return {}


@pytest.mark.slow
def test_tune_answers_within_budget_and_resumes_after_sigkill(tmp_path, data, tiny_model_dir):
    out = tmp_path / "tune"
    cmd = [sys.executable, "-m", "witune.cli.main", "tune", str(data), "--model", str(tiny_model_dir), *STEPS]
    cmd += ["--out", str(out), "--budget", "4", "--no-progress", "--set", "learning_rate=1e-3"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    while "done" not in _status(out).values():  # kill once the first run has finished
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.time() < deadline
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = next(rid for rid, s in _status(out).items() if s == "done")
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "runs" / first).rglob("*") if p.is_file()}

    resumed = subprocess.run([*cmd, "--resume"], env=_env(), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    # the run that had finished was neither retrained nor rescored: every file it had is as it was
    after = {p.name: p.stat().st_mtime_ns for p in (out / "runs" / first).rglob("*") if p.is_file()}
    assert {k: after[k] for k in kept} == kept

    answer = json.loads((out / "tune.json").read_text())
    runs = answer["runs"]
    assert 3 <= len(runs) <= 4  # the budget: 4 runs
    assert answer["search"] == "surface" and answer["stop"]
    assert runs and answer["prior_plw"] in [r["plw"] for r in runs] and {0.0, 1.0} <= {r["plw"] for r in runs}
    # tokens counted before training (planned) equal the tokens trained, run for run
    per_run = answer["grid_tokens"] / len(PLW_PAPER)
    assert all(r["tokens"] == per_run for r in runs)
    assert answer["tokens"] == per_run * len(runs) and answer["tokens"] / answer["grid_tokens"] <= 0.4
    assert 0 <= answer["plw"] <= 1 and "PLW" in resumed.stdout and "of the full grid's" in resumed.stdout
    html = (out / "report.html").read_text()
    assert "Answer: which prompt-loss weight" in html and "held-out response NLL" in html
    # an ordinary sweep folder: status and the analysis read it, the held-out score is a score row
    assert {s for s in _status(out).values()} == {"done"} and len(_status(out)) == len(runs)
    optuna = pytest.importorskip("optuna")
    study = optuna.load_study(study_name="witune-tune", storage=f"sqlite:///{out / 'optuna.db'}")
    assert sorted((t.params["prompt_weight"], t.value) for t in study.trials) == sorted(
        (r["plw"], r["score"]) for r in runs
    )
    rows = [r for _, r in db.result_rows(out) if r.task == "heldout"]
    assert len(rows) == len(runs) and all(r.role == "score" and not r.higher_is_better for r in rows)


def test_bad_input_is_one_line_before_any_training(tmp_path, data, tiny_model_dir, capsys):
    base = ["tune", data, "--model", tiny_model_dir, *STEPS]
    refused([*base, "--out", tmp_path / "a", "--budget", "10 tokens"], capsys, "allows 0 run(s)", "training tokens")
    refused([*base, "--out", tmp_path / "a", "--budget", "lots"], capsys, "budget 'lots'")
    refused([*base, "--out", tmp_path / "a", "--search", "grid", "--budget", "3"], capsys, "grid search needs 11")
    refused(["tune", data, "--model", tmp_path / "nowhere", "--out", tmp_path / "b"], capsys, "nowhere")
    refused([*base, "--out", tmp_path / "a", "--set", "plw=0.5"], capsys, "plw", "the tune sets it")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("".join(json.dumps({"instruction": f"q{i}", "output": ""}) + "\n" for i in range(50)))
    refused(["tune", empty, "--model", tiny_model_dir, "--out", tmp_path / "c"], capsys, str(empty), "line 1", "output")
    # nothing was trained, and a refused tune leaves no tune.yaml: the corrected command starts afresh
    assert not list(tmp_path.rglob("metrics.jsonl")) and not list(tmp_path.rglob("tune.yaml"))


def test_resume_refuses_other_settings(tmp_path, data):
    cfg = TuneConfig(data=str(data), output_dir=str(tmp_path / "t"), budget="4")
    folder = check_folder(cfg, resume=False)
    from witune.workflows.tune import _record

    (folder / "tune.yaml").write_text(json.dumps(_record(cfg)))  # as run_tune records it (JSON is YAML)
    with pytest.raises(ConfigError, match="already holds a tune"):
        check_folder(cfg, resume=False)
    assert check_folder(TuneConfig(data=str(data), output_dir=str(folder), budget="4", workers=2), True) == folder
    with pytest.raises(ConfigError, match="budget differ"):
        check_folder(TuneConfig(data=str(data), output_dir=str(folder), budget="5"), True)
    data.write_text(data.read_text() + json.dumps({"instruction": "x", "output": "y"}) + "\n")
    with pytest.raises(ConfigError, match="data_sha256"):
        check_folder(cfg, True)


def test_rank_guard_promotes_more_on_a_planted_reversal(tmp_path, data, tiny_model_dir):
    cfg = sweep_config_from_dict(
        {
            "set": {"data": str(data), "model": str(tiny_model_dir), "max_steps": 9},
            "plw": [0.0, 0.01, 0.1, 0.3, 1.0, 0.5],
            "search": "halving",
            "halving_heldout": str(data),
            "output_dir": str(tmp_path / "s"),
        }
    )
    folder = Path(cfg.output_dir)
    points = expand(cfg)
    by_id = {p.run_id: p for p in points}
    db.add_points(db.db_path(folder), points)
    ids = [p.run_id for p in points]
    base = [1.0 + 0.01 * k for k in range(20)]  # 20 held-out records, shared difficulty
    for rank, rid in enumerate(ids):  # rung 0: the order of ids; rung 1: the reverse, far beyond noise
        halving.record_outcome(folder, rid, halving.RungOutcome(1 + rank / 10, 0.0), rung=0, steps=3)
        items = [x + 0.5 - rank / 10 + 0.001 * (k % 3) for k, x in enumerate(base)]
        halving.record_outcome(folder, rid, halving.RungOutcome(sum(items) / 20, 0.0, None, items), rung=1, steps=6)
    recorded = {r["run_id"]: r for r in db.rungs(folder) if r["rung"] == 1}
    moved = halving._moved_since(folder, recorded, 1)
    assert (ids[0], ids[-1]) in moved
    scores = {rid: recorded[rid]["score"] for rid in ids}
    assert len(halving.promote(scores, by_id, 3)) == 2  # ceil(6 / 3)
    assert len(halving.promote(scores, by_id, 3, widen=True)) == 4  # ceil(12 / 3)
    # a re-ranking within noise moves nothing
    same = {rid: [x + 0.001 * ((k + i) % 5) for k, x in enumerate(base)] for i, rid in enumerate(ids)}
    assert halving.ranking_moved({rid: 1 + i / 1e4 for i, rid in enumerate(ids)}, same) == []


def test_halving_first_rung_is_a_fraction_past_the_warmup(tmp_path, data):
    cfg = sweep_config_from_dict(
        {
            "set": {"data": str(data), "max_steps": 30, "warmup_ratio": 0.5},
            "plw": [0.0, 0.1, 1.0],
            "search": "halving",
            "halving_heldout": str(data),
            "halving_rungs": 2,
            "halving_first_rung": 1 / 3,
        }
    )
    assert cfg.rung_steps() == [16, 30]  # a third would be step 10, inside the 15-step warmup
    with pytest.raises(ConfigError, match="halving_first_rung"):
        sweep_config_from_dict({**cfg.__dict__, "base": {}, "halving_first_rung": 1.5})
