"""A sweep is sized and its names are checked before anything trains: a grid of a million points, a missing
dataset, model or DPO file, an unknown evaluation task each end in one line at once, not after the points."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from shared import refused, run_cli


def _sweep_file(tmp_path, **keys) -> str:
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"instruction": "Say hi.", "input": "", "output": "Hi."}) + "\n")
    content = {"set": {"data": str(data), "max_steps": 1}, "plw": [0.0, 0.5], "output_dir": str(tmp_path / "out")}
    content.update(keys)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(content))
    return str(path)


def test_a_huge_grid_is_counted_and_refused_before_it_is_built(tmp_path):
    """1,000,000 points (1000 x 1000 weights) used to print nothing for minutes under --dry-run: the count is
    the product of the axes, refused above max_points in one line (a subprocess bounds a regression)."""
    weights = [round(0.001 * i, 3) for i in range(1, 1001)]
    path = _sweep_file(tmp_path, plw=[], prompt_weights=weights, response_weights=weights)
    run = subprocess.run(
        [sys.executable, "-m", "witune.cli.main", "sweep", path, "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "max_points" in lines[0] and "the grid's 1,000,000" in lines[0], run.stderr
    assert not (tmp_path / "out").exists()


def test_a_grid_above_the_bound_runs_when_asked_and_dry_run_prints_the_count(tmp_path, capsys):
    path = _sweep_file(tmp_path, plw=[0.1, 0.2, 0.3], seeds=[1, 2], max_points=5)
    code, _, err = run_cli(["sweep", path, "--dry-run"], capsys)
    assert code == 2 and "the grid's 6 (the product of its axes)" in err
    path = _sweep_file(tmp_path, plw=[0.1, 0.2, 0.3], seeds=[1, 2], max_points=6)
    code, out, _ = run_cli(["sweep", path, "--dry-run"], capsys)
    assert code == 0 and "6 points; names checked" in out and len(out.strip().splitlines()) == 7


def test_every_missing_name_is_listed_in_one_line_before_any_point(tmp_path, capsys, monkeypatch):
    # An evaluation folder without any benchmark: every local task name is unknown there (not skipped as
    # "no folder"), so this runs the same with or without the shared data.
    (tmp_path / "eval").mkdir()
    monkeypatch.setenv("WITUNE_EVAL_DATA", str(tmp_path / "eval"))
    path = _sweep_file(
        tmp_path,
        datasets=[str(tmp_path / "missing.jsonl")],
        models=["./no-such-model"],
        dpo={"data": str(tmp_path / "no-pairs.jsonl")},
        eval_tasks=[
            "witune_no_such_task",
            "witune:no_such_builtin",
            f"witune:generation={tmp_path / 'gone.jsonl'}",
            "witune:robustness=arc_challenge:shots=0",  # not a file argument: not checked as one
        ],
    )
    for extra in (["--dry-run"], []):
        code, out, err = run_cli(["sweep", path, *extra], capsys)
        assert code == 2, (out, err)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1, err
        for needle in (
            "dataset not found",
            "missing.jsonl",
            "model not found: ./no-such-model",
            "DPO data file not found",
            "unknown local evaluation task 'witune_no_such_task'",
            "unknown built-in evaluation 'witune:no_such_builtin'",
            "gone.jsonl",
            "nothing was trained",
        ):
            assert needle in " ".join(lines[0].split()), needle
        assert "robustness=arc_challenge" not in lines[0]
        assert not (tmp_path / "out").exists()  # not even the folder


@pytest.mark.slow
def test_an_unknown_lm_eval_task_is_found_before_training(tmp_path, capsys):
    """A standard name is looked up in lm-eval's own task index (about 20 s to read)."""
    path = _sweep_file(tmp_path, eval_tasks=["arc_easy", "arc_eazy"])
    code, _, err = run_cli(["sweep", path, "--dry-run"], capsys)
    assert code == 2 and "lm-eval has no task or group 'arc_eazy'" in err and "'arc_easy'" not in err


def test_a_missing_ndjson_training_file_is_refused_by_dry_run(tmp_path, capsys, monkeypatch):
    """A bare relative name is a file by its suffix: `.ndjson` (read as JSON lines) is one, as `.jsonl` is."""
    monkeypatch.chdir(tmp_path)
    path = _sweep_file(tmp_path, datasets=["missing.ndjson"])
    refused(["sweep", path, "--dry-run"], capsys, "dataset not found: missing.ndjson", "nothing was trained")
    assert not (tmp_path / "out").exists()
