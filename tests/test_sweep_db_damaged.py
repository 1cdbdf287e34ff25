"""A sweep database as it is found: half-finished, killed, damaged, another program's, on a read-only mount.
Read-only commands (status, analyze, report, recommend --from) open it read-only and say in one line what is
wrong; they never add witune's tables to a file, and they say how much of a sweep their numbers rest on."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from shared import SweepPoint, make_sweep_db, run_cli

from witune.sweep import db
from witune.sweep.orchestrate import folder_lock


def _digest(folder: Path) -> dict[str, str]:
    """The folder's files by content, aside from SQLite's -shm index (any reader rebuilds it) and the lock."""
    files = [
        p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.endswith("-shm") and p.name != db.LOCK_NAME
    ]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.stat().st_size or "-" not in p.name}


READERS = [["sweep", "status"], ["analyze"], ["report", "-o", "{tmp}/r.html"], ["recommend", "{tmp}/d.jsonl", "--from"]]


def _reader(cmd: list[str], folder: Path, tmp: Path) -> list[str]:
    return [c.format(tmp=tmp) for c in cmd] + [str(folder)]


@pytest.mark.parametrize("damage", ["empty", "foreign", "garbage", "point", "value"])
def test_a_damaged_or_foreign_database_is_one_line_and_left_as_it_was(tmp_path, capsys, damage):
    folder = tmp_path / "sweep"
    folder.mkdir()
    (tmp_path / "d.jsonl").write_text(json.dumps({"instruction": "Say hi.", "input": "", "output": "Hi."}) + "\n")
    path = folder / db.DB_NAME
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "foreign":
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
    elif damage == "garbage":
        make_sweep_db(folder)
        data = bytearray(path.read_bytes())
        data[100:4096] = os.urandom(4096 - 100)  # the first page's contents overwritten, the header kept
        path.write_bytes(bytes(data))
    else:
        make_sweep_db(folder)
        with closing(sqlite3.connect(path)) as conn, conn:
            if damage == "point":
                conn.execute("UPDATE runs SET point = '{not json' WHERE run_id = 'r1'")
            else:
                conn.execute("UPDATE results SET value = 'high' WHERE run_id = 'r2'")
    before = _digest(folder)
    for cmd in READERS:
        code, out, err = run_cli(_reader(cmd, folder, tmp_path), capsys)
        assert code == 2, (cmd, out, err)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and "not a usable witune sweep database" in lines[0], (cmd, err)
        assert _digest(folder) == before, cmd  # no table added, nothing rewritten
    sweep_yaml = tmp_path / "sweep.yaml"  # `witune sweep --resume` on it: refused before anything trains
    sweep_yaml.write_text(f"set: {{data: {tmp_path / 'd.jsonl'}}}\nplw: [0.0]\noutput_dir: {folder}\n")
    code, out, err = run_cli(["sweep", sweep_yaml, "--resume", "--no-progress"], capsys)
    assert code == 2 and "not a usable witune sweep database" in err and len(err.strip().splitlines()) == 1, err
    assert not (folder / "runs").exists()
    if damage == "foreign":  # a writer refuses it too: `witune sweep` never adds its tables to another's file
        with pytest.raises(Exception, match="not a usable witune sweep database.*invoices"):
            db.add_points(folder, [SweepPoint("r0", {})])
        assert _digest(folder) == before


def test_status_and_analysis_say_how_much_of_the_sweep_is_done(tmp_path, capsys):
    folder = make_sweep_db(tmp_path / "sweep", done=4, pending=1, running=1)
    with folder_lock(folder):  # a live sweep: its running point is running
        code, out, _ = run_cli(["sweep", "status", folder], capsys)
        assert code == 0 and "4 done, 1 pending, 1 running" in " ".join(out.split())
    code, out, _ = run_cli(["sweep", "status", folder], capsys)  # nobody holds the lock: the sweep was killed
    assert code == 0 and "4 done, 1 pending, 1 interrupted" in " ".join(out.split()) and "running" not in out
    code, out, _ = run_cli(["analyze", folder], capsys)
    assert code == 0
    assert "sweep incomplete: 4 of 6 points done (1 pending, 1 interrupted); only the done points are analysed" in (
        " ".join(out.split())
    )


def test_a_killed_sweep_is_interrupted_not_running(tmp_path):
    """For real: a process holding the sweep's lock is killed with SIGKILL; its point reads as interrupted."""
    folder = make_sweep_db(tmp_path / "sweep", done=1, running=1)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
            str(folder / db.LOCK_NAME),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    assert db.point_counts(folder)["running"] == 1
    holder.kill()
    holder.wait()
    assert db.point_counts(folder) == {
        "done": 1,
        "pending": 0,
        "running": 0,
        "interrupted": 1,
        "failed": 0,
        "stopped": 0,
    }
    fd = os.open(folder / db.LOCK_NAME, os.O_RDWR)  # and looking left the lock free for a `--resume`
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)


def _read_only_mount(folder: Path, command: list[str]) -> subprocess.CompletedProcess:
    """Run `witune COMMAND` with `folder` bind-mounted read-only over itself, in a private mount namespace
    (the mount vanishes with the process). Skips where mounts are not allowed."""
    script = (
        f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" "{folder}" && '
        f'touch "{folder}/probe" 2>/dev/null && exit 99; exec "{sys.executable}" -m witune.cli.main "$@"'
    )
    if shutil.which("unshare") is None:
        pytest.skip("no unshare here: a read-only mount cannot be made")
    run = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *command], capture_output=True, text=True)
    if run.returncode == 99 or "mount:" in run.stderr or "unshare:" in run.stderr:
        pytest.skip(f"read-only bind mounts are not allowed here: {run.stderr.strip()[:200]}")
    return run


def test_a_sweep_on_a_read_only_mount_is_analysed(tmp_path):
    folder = make_sweep_db(tmp_path / "sweep", done=4)
    with closing(sqlite3.connect(folder / db.DB_NAME)) as conn:  # as a finished sweep leaves it: WAL mode, no -wal/-shm
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert sorted(p.name for p in folder.iterdir()) == [db.DB_NAME]
    before = _digest(folder)
    status = _read_only_mount(folder, ["sweep", "status", str(folder)])
    assert status.returncode == 0, status.stderr[-2000:]
    assert "4 done" in " ".join(status.stdout.split())
    analysis = _read_only_mount(folder, ["analyze", str(folder), "--engine", "python"])
    assert analysis.returncode == 0, analysis.stderr[-2000:]
    assert "arc_easy" in analysis.stdout
    assert _digest(folder) == before
