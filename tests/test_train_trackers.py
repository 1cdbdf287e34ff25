"""Trackers read back: what TensorBoard and W&B (offline) recorded equals metrics.jsonl; a tracker that fails
never costs the run its metrics.jsonl. W&B runs with WANDB_MODE=offline: it never touches the network."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from witune.errors import ConfigError
from witune.models.tiny import make_tiny_model
from witune.train import load_config, train
from witune.train.metrics import read_metrics

pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'witune[trackers]')")


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every scalar in a TensorBoard log folder, read with TensorBoard itself."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_history(run_file: Path) -> list[tuple[int, dict[str, float]]]:
    """The history records of a W&B run file (`run-*.wandb`: a LevelDB-style log of protobuf `Record`s: 7-byte
    file header, 32 KiB blocks, each record chunk behind a 7-byte header of checksum, length and type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, pending = run_file.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B", "not a W&B run file"
    rows = []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # the rest of a block is padding
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                rows.append((record.history.step.num, items))
    return rows


@pytest.fixture(scope="module")
def setup_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trackers")
    make_tiny_model(root / "model")
    with open(root / "data.jsonl", "w") as f:
        for i in range(8):
            f.write(json.dumps({"prompt": "say " * (1 + i), "completion": " ok" * (2 + i % 3)}) + "\n")
    return root


def _cfg(root: Path, out: Path, **kw):
    values = dict(
        model=str(root / "model"),
        data=str(root / "data.jsonl"),
        template="plain",
        output_dir=str(out),
        per_device_batch_size=2,
        max_steps=3,
        learning_rate=1e-3,
        progress=False,
    )
    values.update(kw)
    return load_config(overrides=values)


def _f32(x: float) -> float:
    return float(torch.tensor(x, dtype=torch.float32))


def test_tensorboard_and_wandb_offline_equal_metrics(setup_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    train(_cfg(setup_dir, out, report_to="tensorboard,wandb"))
    metrics = read_metrics(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    scalars = tensorboard_scalars(out / "tensorboard")
    for key in ("loss", "response_nll", "lr", "grad_norm"):  # TensorBoard keeps scalars as float32
        assert scalars[f"train/{key}"] == [(m["step"], _f32(m[key])) for m in metrics], key
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    history = wandb_history(runs[0])
    assert [step for step, _ in history] == [1, 2, 3]
    assert [row["train/loss"] for _, row in history] == [m["loss"] for m in metrics]  # JSON: the float64 value


def test_tracker_failing_to_start_is_one_line_and_metrics_survive(setup_dir, tmp_path, capsys):
    """TensorBoard cannot create its folder (a file is in the way): one warning line, the run completes, and
    metrics.jsonl has every step."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "tensorboard").write_text("not a folder")
    train(_cfg(setup_dir, out, report_to="tensorboard"), overwrite=True)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "tracker 'tensorboard'" in ln]
    assert len(lines) == 1 and "training goes on" in lines[0], err[-2000:]
    assert "Traceback" not in err
    assert [m["step"] for m in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]
    assert (out / "model" / "model.safetensors").is_file()


def test_unknown_tracker_is_refused_at_load():
    with pytest.raises(ConfigError, match="report_to"):
        load_config(overrides={"data": "x.jsonl", "report_to": "tensorboard,mlflow"})


def test_missing_tracker_package_is_refused_before_work(setup_dir, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'witune\[trackers\]'"):
        train(_cfg(setup_dir, tmp_path / "run", report_to="wandb"))
    assert not (tmp_path / "run").exists()  # refused before anything was written
