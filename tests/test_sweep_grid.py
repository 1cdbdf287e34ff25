"""Sweep config, grid expansion and the database, without training anything (seconds)."""

from __future__ import annotations

import math

import pytest
import yaml

from witune.data.errors import ConfigError
from witune.sweep import db
from witune.sweep.config import PLW_PAPER, load_sweep_config, sweep_config_from_dict
from witune.sweep.grid import Point, expand


def _write(tmp_path, content: dict, name: str = "sweep.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content))
    return path


def test_presets_expand_to_the_papers_grids(tmp_path):
    plw = expand(sweep_config_from_dict({"set": {"data": "d.jsonl"}, "preset": "plw-paper"}))
    assert len(plw) == 10
    assert [p.labels.prompt_weight for p in plw] == PLW_PAPER
    assert all(p.labels.response_weight == 1.0 and p.train.plw is None for p in plw)
    wit = expand(sweep_config_from_dict({"set": {"data": "d.jsonl"}, "preset": "wit-grid"}))
    pairs = {(p.labels.prompt_weight, p.labels.response_weight) for p in wit}
    assert len(wit) == 35 == len(pairs) and (0.0, 0.0) not in pairs and (0.2, 1.0) in pairs
    assert len({p.run_id for p in wit}) == 35


def test_ids_are_stable_and_depend_only_on_what_is_trained(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    a = expand(
        sweep_config_from_dict({"set": {"data": str(data)}, "plw": [0.1, 0.5], "seeds": [1, 2], "output_dir": "x"})
    )
    # Same grid, axes written in another order, other folder and eval settings, data given relatively.
    b = expand(
        sweep_config_from_dict(
            {
                "seeds": [2, 1],
                "plw": [0.5, 0.1],
                "output_dir": "y",
                "eval_tasks": ["witune_piqa"],
                "set": {"data": str(data)},
            }
        )
    )
    assert len(a) == 4 and sorted(p.run_id for p in a) == sorted(p.run_id for p in b)
    # A changed training key changes every id.
    c = expand(
        sweep_config_from_dict({"set": {"data": str(data), "learning_rate": 1e-4}, "plw": [0.1, 0.5], "seeds": [1, 2]})
    )
    assert not {p.run_id for p in a} & {p.run_id for p in c}
    # Existing files become absolute paths: the workers do not depend on the current folder.
    assert all(p.train.data == str(data.resolve()) for p in a)
    p = a[0]
    assert Point.from_json(p.to_json()) == p
    assert p.train_config(tmp_path / "out").output_dir == str(tmp_path / "out")


def test_base_file_is_read_relative_to_the_sweep_file(tmp_path):
    (tmp_path / "base.yaml").write_text("data: train.jsonl\nmax_steps: 7\noutput_dir: elsewhere\nplw: 0.3\n")
    path = _write(
        tmp_path, {"base": "base.yaml", "weights": [[0.0, 1.0], [0.2, 0.8]], "datasets": ["a.json", "b.json"]}
    )
    cfg = load_sweep_config(path)
    assert cfg.output_dir.endswith("sweep")  # default: sweeps/<file stem>
    points = expand(cfg)
    assert len(points) == 4
    assert {p.labels.dataset for p in points} == {"a", "b"}
    assert all(p.train.max_steps == 7 and "output_dir" not in p.train_keys() for p in points)
    # The weight axis replaces the base config's plw.
    assert {(p.train.prompt_weight, p.train.response_weight, p.train.plw) for p in points} == {
        (0.0, 1.0, None),
        (0.2, 0.8, None),
    }


@pytest.mark.parametrize(
    "content, message",
    [
        ({"set": {"data": "d.json"}, "preset": "nope"}, "preset"),
        ({"set": {"data": "d.json"}, "learning_rate": 1}, "unknown key"),
        ({"preset": "plw-paper"}, "no training data"),
        ({"set": {"data": "d.json"}, "weights": [[0, 0]]}, "not both 0"),
        ({"set": {"data": "d.json"}, "workers": 0}, "workers"),
        ({"set": {"data": "d.json", "output_dir": "o"}}, "output_dir"),
        ({"base": "missing.yaml"}, "missing.yaml"),
    ],
)
def test_bad_sweep_configs_name_the_file_and_key(tmp_path, content, message):
    path = _write(tmp_path, content)
    with pytest.raises(ConfigError, match=message) as info:
        load_sweep_config(path)
    assert str(path) in str(info.value)


def test_bad_training_key_in_the_grid_is_a_config_error():
    cfg = sweep_config_from_dict({"set": {"data": "d.json", "lerning_rate": 1e-3}})
    with pytest.raises(ConfigError, match="lerning_rate"):
        expand(cfg)


def _points(n: int) -> list[Point]:
    return expand(sweep_config_from_dict({"set": {"data": "d.jsonl"}, "plw": [0.1 * i for i in range(n)]}))


def test_db_rows_are_never_duplicated_and_results_frame_matches_the_analysis_schema(tmp_path):
    from witune.analysis.results import REQUIRED
    from witune.workflows import read_sweep_folder

    points = _points(3)
    db.add_points(tmp_path, points)
    db.add_points(tmp_path, points)  # registering again (a resume) adds nothing
    assert [r["status"] for r in db.runs(tmp_path)] == ["pending"] * 3
    rows = [
        {"task": "witune_piqa", "metric": "acc", "value": 0.5, "stderr": 0.1, "higher_is_better": True},
        {
            "task": "witune:generation_length",
            "metric": "mean_tokens",
            "value": 12.0,
            "stderr": None,
            "higher_is_better": False,
        },
        {"task": "weight_distance", "metric": "l2", "value": 0.25, "stderr": None, "higher_is_better": False},
        {
            "task": "witune:memorization=/x/d.jsonl",
            "metric": "bleu",
            "value": float("nan"),
            "stderr": None,
            "higher_is_better": False,
        },
    ]
    for p in points[:2]:
        db.mark_running(tmp_path, p.run_id)
        db.finish_run(tmp_path, p.run_id, rows, [(1, 3.0), (2, 2.5)])
    # A point run twice (killed after finishing, say) replaces its rows.
    db.mark_running(tmp_path, points[0].run_id)
    db.finish_run(tmp_path, points[0].run_id, [{**rows[0], "value": 0.75}], [(1, 3.0), (2, 2.0)])
    db.mark_running(tmp_path, points[2].run_id)
    db.mark_failed(tmp_path, points[2].run_id, "training exited with code 2: error: bad file")

    assert len(db.metrics(tmp_path, points[0].run_id)) == 4
    status = {r["run_id"]: r for r in db.runs(tmp_path)}
    assert status[points[0].run_id]["attempts"] == 2 and status[points[0].run_id]["status"] == "done"
    assert status[points[2].run_id]["status"] == "failed" and "bad file" in status[points[2].run_id]["error"]

    frame, losses = read_sweep_folder(tmp_path)  # the CLI reads the folder and hands the tables to the analysis
    assert set(REQUIRED) <= set(frame.columns)
    assert len(frame) == 2  # one benchmark row per finished run; diagnostics are columns
    first = frame.set_index("run_id").loc[points[0].run_id]
    assert first["benchmark"] == "piqa" and first["score"] == 0.75 and first["generation_length"] == 12.0
    assert first["weight_distance"] == 0.25 and math.isnan(first["memorization_bleu"])
    assert first["prompt_weight"] == points[0].labels.prompt_weight
    assert sorted(losses[losses.run_id == points[0].run_id]["loss"]) == [2.0, 3.0]
    assert set(losses["run_id"]) == {p.run_id for p in points[:2]}


def test_write_eval_rows_for_witune_eval_db(tmp_path):
    path = tmp_path / "results.db"
    row = {"task": "witune_arc_challenge", "metric": "acc", "value": 0.3, "stderr": 0.05, "higher_is_better": True}
    db.write_eval_rows(path, "base-model", [row], new_run=True)
    db.write_eval_rows(path, "base-model", [{**row, "value": 0.4}], new_run=True)
    assert [(m["run_id"], m["value"]) for m in db.metrics(path)] == [("base-model", 0.4)]


def test_status_table_lists_every_point(tmp_path):
    from rich.console import Console

    from witune.sweep.status import status_table

    points = _points(2)
    db.add_points(tmp_path, points)
    db.mark_running(tmp_path, points[0].run_id)
    db.finish_run(
        tmp_path,
        points[0].run_id,
        [{"task": "witune_piqa", "metric": "acc", "value": 0.625, "stderr": None, "higher_is_better": True}],
        [],
    )
    console = Console(record=True, width=200)
    console.print(status_table(tmp_path))
    text = console.export_text()
    assert points[0].run_id in text and points[1].run_id in text
    assert "piqa acc" in text and "0.625" in text and "1 done, 1 pending" in text


def test_sweep_folders_from_before_the_stage_column_still_load(tmp_path):
    """An older sweep.db kept its rows in `metrics`, DPO-stage tasks prefixed `dpo:` and diagnostics told apart
    by task prefix: read as they meant, and new rows of a resumed sweep go beside them."""
    import json
    import sqlite3

    points = _points(2)
    conn = sqlite3.connect(tmp_path / "sweep.db")
    conn.executescript(
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, point TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending',"
        " started REAL, finished REAL, seconds REAL, error TEXT, attempts INTEGER NOT NULL DEFAULT 0);"
        "CREATE TABLE metrics (run_id TEXT NOT NULL, task TEXT NOT NULL, metric TEXT NOT NULL, value REAL,"
        " stderr REAL, higher_is_better INTEGER NOT NULL, PRIMARY KEY (run_id, task, metric));"
        "CREATE TABLE losses (run_id TEXT NOT NULL, step INTEGER NOT NULL, loss REAL, PRIMARY KEY (run_id, step));"
    )
    old = points[0]
    stored = json.loads(old.to_json())
    stored["train"]["normalization"] = "nonzero"  # as older folders stored it: text
    conn.execute("INSERT INTO runs (run_id, point, status) VALUES (?, ?, 'done')", (old.run_id, json.dumps(stored)))
    conn.executemany(
        "INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)",
        [
            (old.run_id, "witune_piqa", "acc", 0.5, 0.1, 1),
            (old.run_id, "weight_distance", "l2", 0.25, None, 0),
            (old.run_id, "witune:memorization=/x/d.jsonl", "n_prompts", 8, None, 1),
            (old.run_id, "witune:robustness=piqa", "drop", 0.1, None, 0),
            (old.run_id, "witune:robustness=piqa", "typos_mean_acc", 0.4, None, 1),
            (old.run_id, "dpo:witune_piqa", "acc", 0.6, 0.1, 1),
            (old.run_id, "dpo:dpo_pairs", "reward_margin", 0.7, None, 1),
            (old.run_id, "dpo:dpo_pairs", "loss", 0.3, None, 0),
        ],
    )
    conn.commit()
    conn.close()
    sft, dpo = db.results_frame(tmp_path, "sft"), db.results_frame(tmp_path, "dpo")
    assert list(sft["benchmark"]) == ["piqa"] and sft["score"].tolist() == [0.5]
    assert sft["weight_distance"].tolist() == [0.25] and sft["robustness_drop"].tolist() == [0.1]
    assert list(dpo["benchmark"]) == ["piqa"] and dpo["score"].tolist() == [0.6]
    assert dpo["dpo_reward_margin"].tolist() == [0.7] and sft["dpo_reward_margin"].isna().all()
    stages = {(m["stage"], m["task"], m["role"]) for m in db.metrics(tmp_path)}
    assert ("dpo", "dpo_pairs", "detail") in stages and ("sft", "witune:robustness=piqa", "detail") in stages
    assert Point.from_json(json.dumps(db.runs(tmp_path)[0]["point"])) == old  # the point loads as it was
    # A resumed sweep writes its new point into the new table, beside the old rows.
    db.add_points(tmp_path, points)
    db.mark_running(tmp_path, points[1].run_id)
    db.finish_run(tmp_path, points[1].run_id, [{"task": "witune_piqa", "metric": "acc", "value": 0.7}], [])
    assert sorted(db.results_frame(tmp_path)["score"]) == [0.5, 0.7]
