"""bench/gpu_check.py starts on a machine without a GPU: every GPU part skips with its reason, the JSON and the
BENCHMARKS.md table are written (the real run needs a lent GPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
PARTS = ["install", "backends", "bf16", "loss_bench", "train_bench"]


def test_gpu_check_skips_every_gpu_part_on_cpu(tmp_path):
    if torch.cuda.is_available():
        import pytest

        pytest.skip("a GPU is present: run bench/gpu_check.py itself")
    bench_md = tmp_path / "BENCHMARKS.md"
    bench_md.write_text(
        "# Benchmarks\n\nbefore\n\n<!-- gpu_check:begin -->\nold table\n<!-- gpu_check:end -->\n\nafter\n"
    )
    out = tmp_path / "gpu_check.json"
    cmd = [sys.executable, str(SCRIPT), "--no-install", "--out", str(out), "--benchmarks", str(bench_md)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads(out.read_text())
    assert list(results["parts"]) == PARTS
    for name in PARTS:
        part = results["parts"][name]
        assert part["status"] == "skipped", (name, part)
        expected = "--no-install" if name == "install" else "no CUDA device"
        assert expected in part["reason"], (name, part["reason"])
    text = bench_md.read_text()
    assert "old table" not in text and text.startswith("# Benchmarks\n\nbefore") and text.endswith("after\n")
    assert "| train_bench | skipped" in text and text.count("<!-- gpu_check:begin -->") == 1
