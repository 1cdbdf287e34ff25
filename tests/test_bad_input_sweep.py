"""Bad input to the sweep commands and to what writes into a sweep (`witune eval --db`): one error line each,
nothing trained, nothing in the folder changed."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import yaml
from shared import make_sweep_db, refused

from witune.sweep import db, expand, load_sweep_config
from witune.sweep.orchestrate import _record

RECORD = {"instruction": "Say hi.", "input": "", "output": "Hi."}


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(RECORD) + "\n")
    return path


def _sweep_yaml(tmp_path: Path, name: str, **keys) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"set": {"data": str(_data(tmp_path)), "max_steps": 2}, "plw": [0.0, 1.0], **keys}))
    return path


def _started(tmp_path: Path, config: Path) -> Path:
    """A sweep folder as `witune sweep CONFIG` leaves it once its points are registered: sweep.yaml and sweep.db."""
    cfg = load_sweep_config(config, {"output_dir": str(tmp_path / "sweep")})
    folder = Path(cfg.output_dir)
    folder.mkdir()
    (folder / "sweep.yaml").write_text(yaml.safe_dump(_record(cfg), sort_keys=False))
    db.add_points(folder, expand(cfg))
    return folder


def test_resume_with_another_sweep_config_is_refused_naming_the_keys(tmp_path, capsys):
    folder = _started(tmp_path, _sweep_yaml(tmp_path, "grid.yaml"))
    heldout = _data(tmp_path)
    halving = _sweep_yaml(tmp_path, "halving.yaml", search="halving", halving_heldout=str(heldout), halving_rungs=2)
    text = yaml.safe_load(halving.read_text())
    text["set"]["max_steps"] = 9
    halving.write_text(yaml.safe_dump(text))
    record = (folder / "sweep.yaml").read_bytes()
    err = refused(
        ["sweep", halving, "--resume", "--no-progress", "--out", folder],
        capsys,
        "cannot resume the sweep",
        "set.max_steps 2 -> 9",
        "search 'grid' -> 'halving'",
    )
    assert "output_dir '" not in err and "base_path" not in err  # where the sweep is and runs may differ
    assert (folder / "sweep.yaml").read_bytes() == record and not (folder / "runs").exists()
    assert {r["status"] for r in db.runs(folder)} == {"pending"}


def test_resume_may_change_how_the_sweep_runs_and_continue_a_halving_search_as_a_grid(tmp_path):
    from witune.sweep.orchestrate import check_same_sweep

    grid = _sweep_yaml(tmp_path, "grid.yaml")
    folder = _started(tmp_path, grid)
    check_same_sweep(folder, load_sweep_config(grid, {"output_dir": str(folder), "workers": 2, "backend": "ray"}))
    halving = _sweep_yaml(
        tmp_path, "halving.yaml", search="halving", halving_heldout=str(_data(tmp_path)), halving_rungs=2, halving_eta=2
    )
    (folder / "sweep.yaml").write_text(yaml.safe_dump(_record(load_sweep_config(halving)), sort_keys=False))
    check_same_sweep(folder, load_sweep_config(grid, {"output_dir": str(folder)}))  # stopped points train on


def _edit(folder: Path, *statements: str) -> None:
    with closing(sqlite3.connect(folder / db.DB_NAME)) as conn, conn:
        for sql in statements:
            conn.execute(sql)


def _halving_db(tmp_path: Path) -> Path:
    """Two points ranked at rung 0 (steps 3): r0 promoted, r1 stopped."""
    folder = make_sweep_db(tmp_path / "sweep", done=0, pending=2)
    db.record_rung(folder, "r0", 0, 3, 1.5, 100.0)
    db.record_rung(folder, "r1", 0, 3, 1.9, 100.0)
    db.decide_rung(folder, 0, {"r0": "promoted", "r1": "stopped"})
    return folder


def test_a_halving_database_whose_rungs_were_lost_is_refused(tmp_path, capsys):
    for damage in ("DROP TABLE rungs", "DELETE FROM rungs"):
        folder = _halving_db(tmp_path / damage.split()[0])
        _edit(folder, damage)
        refused(["sweep", "status", folder], capsys, "'r1' was stopped by successive halving")
        config = tmp_path / "resume.yaml"
        config.write_text(yaml.safe_dump({"set": {"data": str(_data(tmp_path)), "max_steps": 2}, "plw": [0.0]}))
        refused(["sweep", config, "--resume", "--no-progress", "--out", folder], capsys, "stopped by successive")
        assert not (folder / "runs").exists()
        with closing(sqlite3.connect(folder / db.DB_NAME)) as conn:  # a dropped table is not silently re-created
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert ("rungs" in tables) == (damage != "DROP TABLE rungs")


def test_text_in_a_rung_is_one_line_and_a_nan_score_is_shown(tmp_path, capsys):
    from shared import run_cli

    from witune.sweep.halving import rising_score_warning

    folder = _halving_db(tmp_path)
    _edit(folder, "UPDATE rungs SET score = NULL WHERE run_id = 'r0'")  # NaN is stored as NULL
    code, out, err = run_cli(["sweep", "status", folder], capsys)
    assert code == 0 and "step 3:  promoted" in out and "…" not in out, err  # off a terminal: not cut at 80
    assert rising_score_warning(db.rungs(folder) + [{**db.rungs(folder)[0], "rung": 1, "score": 2.0}]) is None
    for edit in ("score = 'NaN'", "tokens = 'many'", "steps = 'three'", "decision = 'maybe'"):
        _edit(folder, f"UPDATE rungs SET {edit} WHERE run_id = 'r0'")
        refused(["sweep", "status", folder], capsys, "not a usable witune sweep database", "'r0'")
        _edit(
            folder, "UPDATE rungs SET score = 1.5, tokens = 100, steps = 3, decision = 'promoted' WHERE run_id = 'r0'"
        )


READERS = [["sweep", "status"], ["analyze"], ["report", "-o", "{tmp}/r.html"], ["recommend", "{tmp}/d.jsonl", "--from"]]


def test_text_in_any_number_column_is_one_line_for_every_reader(tmp_path, capsys):
    _data(tmp_path)
    for edit in ("UPDATE results SET stderr = 'small'", "UPDATE losses SET loss = 'low'"):
        folder = make_sweep_db(tmp_path / edit.split()[3], done=4)
        _edit(folder, edit + " WHERE run_id = 'r2'")
        for cmd in READERS if "results" in edit else READERS[1:3]:  # only the analysis reads losses
            refused([c.format(tmp=tmp_path) for c in cmd] + [folder], capsys, "not a usable witune sweep database")


def _eval_into(model: Path, data: Path, target: Path, run_id: str) -> list:
    task = f"witune:generation_length={data}"
    return ["eval", model, "--tasks", task, "--max-new-tokens", "2", "--db", target, "--run-id", run_id]


def test_eval_db_writes_only_into_a_run_of_an_intact_sweep(tmp_path, tiny_model_dir, capsys):
    from shared import run_cli

    data = _data(tmp_path)
    folder = make_sweep_db(tmp_path / "sweep", done=1)
    before = db.runs(folder)
    refused(_eval_into(tiny_model_dir, data, folder, "base"), capsys, "no run 'base' in this sweep", "r0")
    assert db.runs(folder) == before  # no phantom "done" run
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    refused(_eval_into(tiny_model_dir, data, empty, "r0"), capsys, "not a usable witune sweep database")
    assert empty.read_bytes() == b""
    named = tmp_path / "sweep.db"
    named.mkdir()
    refused(_eval_into(tiny_model_dir, data, named, "r0"), capsys, "not a sweep folder")
    assert list(named.iterdir()) == []
    code, out, err = run_cli(_eval_into(tiny_model_dir, data, folder, "r0"), capsys)
    assert code == 0, err
    assert any(m["task"].startswith("witune:generation_length") for m in db.metrics(folder, "r0"))


def test_a_halving_heldout_that_is_a_folder_or_empty_is_refused_by_dry_run(tmp_path, capsys):
    folder, empty = tmp_path / "heldout", tmp_path / "heldout.jsonl"
    folder.mkdir()
    empty.write_text("")
    for heldout in (folder, empty):
        config = _sweep_yaml(
            tmp_path, "h.yaml", search="halving", halving_heldout=str(heldout), halving_eta=2, halving_rungs=2
        )
        refused(["sweep", config, "--dry-run", "--out", tmp_path / "out"], capsys, "halving_heldout", str(heldout))
    assert not (tmp_path / "out").exists()


def _digests(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_output_never_lies_inside_an_input_whatever_force_says(tmp_path, tiny_model_dir, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)  # a copy: the session's tiny model must survive a regression
    data = _data(tmp_path)
    sweep = make_sweep_db(tmp_path / "sweep", done=2)
    dataset = tmp_path / "dataset"  # a dataset folder is an input too
    dataset.mkdir()
    shutil.copy(data, dataset / "train.jsonl")
    inputs = {p: _digests(p) for p in (model, sweep, dataset)}
    task = f"witune:generation_length={data}"
    cases = [
        ["eval", model, "--tasks", task, "--json", model / "config.json", "--force"],
        ["eval", tiny_model_dir, "--tasks", task, "--json", data, "--force"],  # the evaluation's own data file
        ["eval", model, "--tasks", task, "--json", model / "sub" / "r.json"],
        ["inspect", data, "--model", model, "--json", model / "tokenizer.json", "--force"],
        ["inspect", dataset, "--model", tiny_model_dir, "--json", dataset / "rows.jsonl"],
        ["dpo-pairs", data, "--model", model, "-o", model / "pairs.jsonl"],
        ["report", sweep, "-o", sweep / "report.html", "--force"],
        ["analyze", sweep, "--plots", sweep / "plots"],
        ["stats", dataset, "--model", tiny_model_dir, "--plot", dataset],
    ]
    for argv in cases:
        refused(argv, capsys, "is the input file" if data in argv[-3:] else "lies inside the input folder")
    assert {p: _digests(p) for p in (model, sweep, dataset)} == inputs
    assert data.read_text() == json.dumps(RECORD) + "\n"


def test_an_output_that_cannot_be_written_is_refused_before_the_work(tmp_path, tiny_model_dir, capsys):
    data = _data(tmp_path)
    refused(
        ["dpo-pairs", data, "--model", tiny_model_dir, "-o", data / "pairs.jsonl"],
        capsys,
        f"cannot write {data / 'pairs.jsonl'}: {data} is a file, not a folder",
    )
    from test_sweep_db_damaged import _read_only_mount

    folder = tmp_path / "read-only"
    folder.mkdir()
    task = f"witune:generation_length={data}"
    run = _read_only_mount(folder, ["eval", str(tiny_model_dir), "--tasks", task, "--json", str(folder / "r.json")])
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert run.returncode == 2 and len(lines) == 1 and f"the folder {folder} is not writable" in lines[0], run.stderr
    assert "mean_tokens" not in run.stdout  # refused before the evaluation, not after it


def test_a_database_with_many_damaged_pages_is_refused_in_one_line(tmp_path, capsys):
    import random

    folder = make_sweep_db(tmp_path / "sweep", done=300)
    path = folder / db.DB_NAME
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    rng = random.Random(0)
    for page in range(3, len(data) // 4096):  # the table pages' cells overwritten: SQLite lists each problem
        data[page * 4096 + 200 : page * 4096 + 300] = bytes(rng.randrange(256) for _ in range(100))
    path.write_bytes(bytes(data))
    err = refused(["sweep", "status", folder], capsys, "not a usable witune sweep database", "more problems")
    assert len(err.strip().splitlines()) == 1, err


def _eval_data(tmp_path: Path) -> Path:
    """An evaluation folder whose ARC file is empty, and a two-record IFEval (real records when present)."""
    from shared import SHARED_DATA

    folder = tmp_path / "eval"
    (folder / "arc_challenge").mkdir(parents=True)
    (folder / "arc_challenge" / "arc_challenge_test_llmfoundry.jsonl").write_text("")
    (folder / "ifeval").mkdir()
    real = SHARED_DATA / "eval" / "ifeval" / "input_data.jsonl"
    records = real.read_text().splitlines()[:2] if real.is_file() else []
    fallback = {"key": 1, "prompt": "Write one word.", "instruction_id_list": [], "kwargs": []}
    (folder / "ifeval" / "input_data.jsonl").write_text("\n".join(records or [json.dumps(fallback)]) + "\n")
    return folder


def test_eval_on_an_empty_or_unknown_task_is_one_line(tmp_path, tiny_model_dir, capsys):
    data = _eval_data(tmp_path)
    argv = ["eval", tiny_model_dir, "--data-dir", data, "--limit", "1", "--tasks"]
    refused([*argv, "witune_arc_challenge"], capsys, "arc_challenge_test_llmfoundry.jsonl holds no items")
    refused([*argv, "no_such_task_xyz"], capsys, "lm-eval has no task or group 'no_such_task_xyz'")


def test_ifeval_on_a_model_with_a_shorter_context_says_so(tmp_path, tiny_model_dir, capsys):
    from shared import run_cli

    data = _eval_data(tmp_path)
    code, out, err = run_cli(
        ["eval", tiny_model_dir, "--data-dir", data, "--limit", "1", "--tasks", "witune_ifeval"], capsys
    )
    errors = [ln for ln in err.splitlines() if "error" in ln]
    assert code == 2 and len(errors) == 1, err
    assert "'witune_ifeval' generates up to 1280 tokens, but the model's context is 1024 tokens" in errors[0]


def test_analyze_a_sweep_without_a_finished_point_says_so(tmp_path, capsys):
    folder = make_sweep_db(tmp_path / "sweep", done=0, pending=2, running=1)
    err = refused(
        ["analyze", folder], capsys, "the sweep has no finished point to analyse yet (2 pending, 1 interrupted)"
    )
    assert "no data rows" not in err


def test_wandb_gets_a_short_init_timeout_where_its_server_cannot_be_reached(monkeypatch):
    import socket

    from witune.train.trackers import OFFLINE_INIT_TIMEOUT, wandb_init_timeout

    with socket.socket() as s:  # a port nobody listens on: the connection is refused, as offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    assert wandb_init_timeout() == OFFLINE_INIT_TIMEOUT
    with socket.socket() as server:  # a server that answers: W&B's own default
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert wandb_init_timeout() is None
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_init_timeout() is None
