"""Nothing lost: every writer goes through a temporary name (a failure, a full disk or a SIGKILL mid-write leaves
the old file or folder intact, and no litter once the next write ran); `-o` onto an input is refused and an
existing output needs --force; clean keeps the records it removes; run folders are protected."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from witune.atomic import OutputError, atomic_dir, atomic_open, check_output
from witune.cli.main import main
from witune.stats.clean import Cleaning, Removal, write_removals
from witune.stats.records import write_records

OLD = [{"instruction": "old", "input": "", "output": "kept"}]


def _tree(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` (hidden ones included)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _write_old(path: Path) -> bytes:
    write_records(OLD, path)
    return path.read_bytes()


# --- writers: a failure midway keeps the old file ------------------------------------------------------------


@pytest.mark.parametrize("name", ["out.json", "out.jsonl"])
def test_records_writer_failing_midway_keeps_old_file(tmp_path, name):
    path = tmp_path / name
    old = _write_old(path)
    records = [{"instruction": f"r{i}", "input": "", "output": "x" * 1000} for i in range(500)]
    records.insert(300, {"instruction": object()})  # the data source fails midway: not JSON-serialisable
    with pytest.raises(TypeError):
        write_records(records, path)
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == [name]  # no temporary left behind


def test_report_writer_failing_midway_keeps_old_file(tmp_path):
    path = tmp_path / "out.removed.jsonl"
    path.write_text("old report\n")
    removed = [Removal(f"f, line {i}", i, "duplicate", "", "d", {"i": i}) for i in range(100)]
    removed.insert(50, Removal("f, line 50", 50, "duplicate", "", "d", {"bad": object()}))
    with pytest.raises(TypeError):
        write_removals(Cleaning([], removed, 101, ""), path)
    assert path.read_text() == "old report\n" and os.listdir(tmp_path) == [path.name]


def test_folder_writer_failing_midway_keeps_old_folder(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("old config")
        (tmp / "weights.bin").write_bytes(b"old weights")
    before = _tree(target)
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"new weights")
        raise RuntimeError("killed between the weights and the tokenizer")
    assert _tree(target) == before and os.listdir(tmp_path) == ["model"]
    with atomic_dir(target) as tmp:  # a successful replace swaps the whole folder, nothing of the old remains
        (tmp / "other.json").write_text("new")
    assert _tree(target).keys() == {"other.json"} and os.listdir(tmp_path) == ["model"]


def test_folder_replace_without_renameat2_swaps_whole_folders(tmp_path, monkeypatch):
    """Where the one-step exchange is unavailable (other systems, some file systems) the old folder is renamed
    aside, the new one in, then the old removed: the result is the same whole new folder, no litter."""
    import witune.atomic as atomic

    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    target = tmp_path / "model"
    for content in ("old", "new"):
        with atomic_dir(target) as tmp:
            (tmp / f"{content}.bin").write_text(content)
    assert _tree(target).keys() == {"new.bin"} and os.listdir(tmp_path) == ["model"]


def test_output_through_a_symlink_to_the_input_is_refused(tmp_path):
    src = tmp_path / "data.jsonl"
    src.write_text("{}\n")
    (tmp_path / "alias.jsonl").symlink_to(src)
    with pytest.raises(OutputError, match="is the input file"):
        check_output(tmp_path / "alias.jsonl", [src], force=True)
    assert check_output(tmp_path / "new.jsonl", [src]) == tmp_path / "new.jsonl"


# A child process that writes through a given writer under a file-size limit: the kernel then fails its writes
# with EFBIG past the limit, as a full disk does with ENOSPC (a real failing write, not a mock).
_DISK_FULL = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))
    kind, path = sys.argv[1], Path(sys.argv[2])
    from witune.atomic import OutputError, atomic_savefig, atomic_write_bytes, atomic_write_text
    from witune.stats.records import write_records
    try:
        if kind == "records":
            write_records([{"instruction": str(i), "input": "", "output": "y" * 500} for i in range(2000)], path)
        elif kind == "text":
            atomic_write_text(path, "z" * 1_000_000)
        elif kind == "bytes":
            atomic_write_bytes(path, bytes(1_000_000))
        elif kind == "figure":
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            import numpy as np
            fig, ax = plt.subplots(figsize=(8, 8))
            ax.imshow(np.random.default_rng(0).random((800, 800)))
            atomic_savefig(fig, path, dpi=100)
    except OutputError as e:
        print(e)
        sys.exit(3)
""")


@pytest.mark.parametrize(
    "kind, name",
    [
        ("records", "out.jsonl"),
        ("records", "out.json"),
        ("text", "report.html"),
        ("bytes", "entry.npz"),
        ("figure", "plot.png"),
    ],
)
def test_full_disk_keeps_old_file_and_says_so_in_one_line(tmp_path, kind, name):
    path = tmp_path / name
    path.write_bytes(b"old content\n")
    run = subprocess.run([sys.executable, "-c", _DISK_FULL, kind, str(path)], capture_output=True, text=True)
    assert run.returncode == 3, run.stderr[-2000:]
    assert run.stdout.strip() == f"cannot write {path}: File too large"
    assert path.read_bytes() == b"old content\n" and os.listdir(tmp_path) == [name]


_KILLED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from witune.atomic import atomic_dir
    from witune.stats.records import write_records
    kind, path, ready = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

    def records():
        for i in range(100_000):
            if i == 5000:
                ready.write_text("half written")
                time.sleep(60)
            yield {"instruction": str(i), "input": "", "output": "new " * 20}

    if kind == "records":
        write_records(records(), path)
    else:
        with atomic_dir(path) as tmp:
            (tmp / "model.safetensors").write_bytes(b"new weights")
            ready.write_text("half written")
            time.sleep(60)
            (tmp / "tokenizer.json").write_text("new tokenizer")
""")


@pytest.mark.parametrize("kind", ["records", "folder"])
def test_sigkill_mid_write_keeps_old_and_next_write_removes_litter(tmp_path, kind):
    work = tmp_path / "work"
    work.mkdir()
    path, ready = work / ("out.jsonl" if kind == "records" else "model"), tmp_path / "ready"
    if kind == "records":
        _write_old(path)
        before = {path.name: path.read_bytes()}
    else:
        with atomic_dir(path) as tmp:
            (tmp / "model.safetensors").write_bytes(b"old weights")
            (tmp / "tokenizer.json").write_text("old tokenizer")
        before = _tree(path)
    child = subprocess.Popen([sys.executable, "-c", _KILLED, kind, str(path), str(ready)])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the writer never got half-way"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    if kind == "records":
        assert {path.name: path.read_bytes()} == before
        assert json.loads(path.read_text()) == OLD[0]
    else:
        assert _tree(path) == before  # complete old folder: no new weights next to the old tokenizer
    litter = [p for p in os.listdir(work) if p != path.name]
    assert len(litter) == 1 and litter[0].startswith(f".{path.name}.{child.pid}.")  # the dead writer's temporary
    if kind == "records":
        write_records(OLD * 2, path)
    else:
        with atomic_dir(path) as tmp:
            (tmp / "x").write_text("next")
    assert os.listdir(work) == [path.name]  # the next write to the same path cleared it


def test_atomic_open_refuses_append_mode(tmp_path):
    with pytest.raises(ValueError), atomic_open(tmp_path / "f", "a"):
        pass


# --- -o onto an input, existing outputs, clean's removed records ----------------------------------------------


def _data(tmp_path: Path) -> Path:
    src = tmp_path / "data.jsonl"
    lines = [json.dumps({"instruction": f"Question {i}?", "input": "", "output": f"Answer {i}."}) for i in range(3)]
    lines.insert(1, json.dumps({"instruction": "Say nothing.", "input": "", "output": "N/A"}))
    lines.insert(2, json.dumps({"instruction": "Question 0?", "input": "", "output": "Answer 0."}))
    lines.insert(3, '{"instruction": "broken", ')
    src.write_text("\n".join(lines) + "\n")
    return src


def test_clean_onto_its_input_is_refused_and_the_input_intact(tmp_path, capsys):
    src = _data(tmp_path)
    before = src.read_bytes()
    assert main(["clean", str(src), "-o", str(src)]) == 2
    err = capsys.readouterr().err
    assert "is the input file" in err and str(src) in err and len(err.strip().splitlines()) == 1
    os.link(src, tmp_path / "hardlink.jsonl")  # the same file under another name (same inode)
    assert main(["clean", str(src), "-o", str(tmp_path / "hardlink.jsonl"), "--force"]) == 2
    assert main(["clean", str(src), "-o", str(tmp_path / "sub" / ".." / "data.jsonl"), "--force"]) == 2
    assert src.read_bytes() == before
    assert main(["invert", str(src), "-o", str(src)]) == 2
    assert src.read_bytes() == before


def test_existing_output_needs_force(tmp_path, capsys):
    src = _data(tmp_path)
    out = tmp_path / "clean.jsonl"
    out.write_text("precious\n")
    assert main(["clean", str(src), "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "precious\n"
    assert not (tmp_path / "clean.removed.jsonl").exists()  # refused before any work: nothing written
    assert main(["invert", str(src), "-o", str(out)]) == 2
    assert out.read_text() == "precious\n"
    assert main(["clean", str(src), "-o", str(out), "--force"]) == 0
    assert len(out.read_text().splitlines()) == 3
    with pytest.raises(OutputError, match="is a folder"):
        check_output(tmp_path, [src])


def test_clean_side_file_holds_the_removed_records(tmp_path):
    src = _data(tmp_path)
    out = tmp_path / "clean.jsonl"
    assert main(["clean", str(src), "-o", str(out)]) == 0
    report = [json.loads(ln) for ln in (tmp_path / "clean.removed.jsonl").read_text().splitlines()]
    by_line = {r["index"]: r for r in report}
    assert set(by_line) == {2, 3, 4}
    assert by_line[2]["reason"] == "placeholder output" and by_line[2]["record"] == {
        "instruction": "Say nothing.",
        "input": "",
        "output": "N/A",
    }
    assert by_line[3]["reason"] == "duplicate" and by_line[3]["record"]["output"] == "Answer 0."
    assert by_line[4]["reason"] == "invalid" and by_line[4]["raw"] == '{"instruction": "broken", '
    assert all(r["location"] == f"{src}, line {r['index']}" for r in report)
    # Kept + removed give back every input line: nothing is lost.
    kept = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert len(kept) + len(report) == len(src.read_text().splitlines())


# --- protected run folders ---------------------------------------------------------------------------------


@pytest.fixture
def run_setup(tmp_path, tiny_model_dir):
    data = tmp_path / "train.jsonl"
    words = "a small dog reads the question and writes a clear answer step by step".split()
    data.write_text(
        "".join(
            json.dumps({"instruction": " ".join(words[: 2 + i % 9]), "input": "", "output": " ".join(words[i % 5 :])})
            + "\n"
            for i in range(8)
        )
    )
    return tiny_model_dir, data


def _cfg(model: Path, data: Path, out: Path, **kw):
    from witune.train import load_config

    values = dict(
        model=str(model),
        data=str(data),
        output_dir=str(out),
        per_device_batch_size=2,
        max_steps=2,
        learning_rate=1e-3,
        warmup_ratio=0.25,
        prompt_weight=0.1,
        save_every=2,
        progress=False,
        seed=3,
    )
    values.update(kw)
    return load_config(overrides=values)


def test_finished_run_is_protected(run_setup, tmp_path, capsys):
    from witune.data.errors import ConfigError
    from witune.train import train

    model, data = run_setup
    out = tmp_path / "run"
    train(_cfg(model, data, out))
    before = _tree(out)
    with pytest.raises(ConfigError, match="not empty.*--resume.*--overwrite"):
        train(_cfg(model, data, out, prompt_weight=0.5))
    # --overwrite with missing data fails before touching the old run
    with pytest.raises(Exception, match="missing.jsonl"):
        train(_cfg(model, tmp_path / "missing.jsonl", out, prompt_weight=0.5), overwrite=True)
    assert _tree(out) == before
    # a fresh folder whose run fails early gets no config.yaml (nor anything else)
    with pytest.raises(Exception, match="missing.jsonl"):
        train(_cfg(model, tmp_path / "missing.jsonl", tmp_path / "fresh"))
    assert not (tmp_path / "fresh" / "config.yaml").exists()
    # --overwrite replaces the run, old checkpoints included: a later --resume cannot continue the old run
    train(_cfg(model, data, out, prompt_weight=0.5, save_every=0), overwrite=True)
    assert not (out / "checkpoints").exists()
    assert "prompt_weight: 0.5" in (out / "config.yaml").read_text()
    assert (
        main(
            [
                "train",
                "--set",
                f"model={model}",
                "--set",
                f"data={data}",
                "--set",
                f"output_dir={out}",
                "--set",
                "progress=false",
            ]
        )
        == 2
    )
    assert "not empty" in capsys.readouterr().err


def test_resume_with_other_loss_settings_is_refused(run_setup, tmp_path):
    from witune.data.errors import ConfigError
    from witune.train import train

    model, data = run_setup
    out = tmp_path / "run"
    train(_cfg(model, data, out))
    before = _tree(out)
    with pytest.raises(ConfigError, match=r"prompt_weight 0\.1 -> 0\.5.*learning_rate 0\.001 -> 0\.002"):
        train(_cfg(model, data, out, prompt_weight=0.5, learning_rate=2e-3), resume=True)
    other = tmp_path / "other.jsonl"
    other.write_text(data.read_text().replace("dog", "cat"))
    with pytest.raises(ConfigError, match="data"):
        train(_cfg(model, other, out), resume=True)
    assert _tree(out) == before


def test_resume_with_more_steps_continues_at_the_right_learning_rate(run_setup, tmp_path, capsys):
    import torch

    from witune.train import train
    from witune.train.metrics import read_metrics
    from witune.train.setup import build_scheduler

    model, data = run_setup
    out = tmp_path / "run"
    train(_cfg(model, data, out, max_steps=4, save_every=4))  # cosine to 0 at step 4, checkpoint at step 4
    assert read_metrics(out / "metrics.jsonl")[-1]["step"] == 4
    with open(out / "metrics.jsonl", "a") as f:  # a kill mid-append leaves half a line
        f.write('{"step": 5, "lo')
    cfg = _cfg(model, data, out, max_steps=8, save_every=4)
    train(cfg, resume=True)
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 9))  # each step once, the cut line dropped
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.learning_rate)
    sched = build_scheduler(cfg, opt, 8)
    expected = []
    for _ in range(8):
        expected.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert rows[4]["lr"] > 0.1 * cfg.learning_rate  # not the old schedule's final 0
    assert [r["lr"] for r in rows[4:]] == pytest.approx(expected[4:], rel=1e-12)
    assert "recomputed for 8 steps" in capsys.readouterr().out


def test_failed_model_save_leaves_the_old_model_loadable(run_setup, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from witune.train import setup, train

    model, data = run_setup
    out = tmp_path / "run"
    train(_cfg(model, data, out))
    before = _tree(out / "model")

    def dies(*args, **kwargs):  # the weights are written by now; the tokenizer never comes
        raise KeyboardInterrupt

    monkeypatch.setattr(setup, "save_tokenizer_and_note", dies)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(model, data, out, max_steps=3, save_every=0), resume=True)
    assert _tree(out / "model") == before
    assert not [p for p in os.listdir(out) if p.startswith(".model")]
    AutoModelForCausalLM.from_pretrained(out / "model")


_TRAIN_DISK_FULL = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
    from witune.cli.main import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.slow
def test_full_disk_during_model_save_leaves_the_old_model(run_setup, tmp_path):
    """A real failing write (file-size limit, as a full disk) while `model/` is saved: the old model stays."""
    from transformers import AutoModelForCausalLM

    from witune.train import train

    model, data = run_setup
    out = tmp_path / "run"
    train(_cfg(model, data, out))
    before = _tree(out / "model")
    described = {n: (out / n).read_bytes() for n in ("config.yaml", "metrics.jsonl")}
    limit = (out / "model" / "model.safetensors").stat().st_size // 2  # every other file is smaller
    sets = dict(
        model=model,
        data=data,
        output_dir=out,
        per_device_batch_size=2,
        max_steps=3,
        learning_rate=1e-3,
        warmup_ratio=0.25,
        prompt_weight=0.1,
        save_every=0,
        progress=False,
        seed=3,
    )
    args = ["train", *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")], "--resume"]
    run = subprocess.run([sys.executable, "-c", _TRAIN_DISK_FULL, str(limit), *args], capture_output=True, text=True)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert f"error: cannot write {out / 'model'}: File too large" in " ".join(run.stderr.split())
    assert _tree(out / "model") == before
    # What describes model/ still describes it: not the 3 steps of the run whose save failed.
    assert {n: (out / n).read_bytes() for n in described} == described
    assert not [p for p in os.listdir(out) if p.startswith(".model")]
    AutoModelForCausalLM.from_pretrained(out / "model")


_TRAIN_UNDER_UMASK = textwrap.dedent("""
    import os, sys
    os.umask(int(sys.argv[1], 8))
    from witune.cli.main import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.parametrize("umask", ["022", "000", "077"])
def test_every_file_of_a_run_follows_the_umask(run_setup, tmp_path, umask):
    """model.safetensors (written through a temporary file) got 0600 whatever the umask, while the optimizer and
    RNG pickles of a checkpoint follow it: every file a run writes gets what a plainly created file would."""
    model, data = run_setup
    out = tmp_path / "run"
    sets = dict(model=model, data=data, output_dir=out, per_device_batch_size=2, max_steps=2, save_every=1)
    args = ["train", *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")], "--set", "progress=false"]
    run = subprocess.run([sys.executable, "-c", _TRAIN_UNDER_UMASK, umask, *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    want_file, want_dir = 0o666 & ~int(umask, 8), 0o777 & ~int(umask, 8)
    modes = {p.relative_to(out): p.stat().st_mode & 0o777 for p in out.rglob("*")}
    assert any(p.name == "model.safetensors" for p in modes) and any(p.suffix == ".pkl" for p in modes)
    wrong = {str(p): oct(m) for p, m in modes.items() if m != (want_dir if (out / p).is_dir() else want_file)}
    assert not wrong, f"umask {umask}: expected files {oct(want_file)}, folders {oct(want_dir)}"
