"""The HTML report and the analyze / report commands, on a synthetic sweep written as CSV."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess

import pytest

from witune.analysis.synthetic import SyntheticSweep, make_sweep
from witune.cli import analyze as analyze_cli
from witune.cli import report as report_cli

DESIGN = SyntheticSweep(
    models=["a", "b"],
    datasets={"short": 0.1, "long": 4.0},
    benchmarks=["arc", "piqa", "ppl"],
    prompt_weights=[0.0, 0.01, 0.1, 0.5, 1.0],
    response_weights=[0.5, 1.0],
    steps=20,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="witune")
    sub = parser.add_subparsers(dest="command", required=True)
    analyze_cli.register(sub)
    report_cli.register(sub)
    return parser


@pytest.fixture(scope="module")
def sweep_csv(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    results, losses = make_sweep(DESIGN)
    results.to_csv(folder / "results.csv", index=False)
    losses.to_csv(folder / "losses.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def report_path(sweep_csv):
    out = sweep_csv / "out" / "report.html"
    args = _parser().parse_args(
        [
            "report",
            str(sweep_csv / "results.csv"),
            "-o",
            str(out),
            "--losses",
            str(sweep_csv / "losses.csv"),
            "--bootstrap",
            "0",
            "--engine",
            "python",
        ]
    )  # the R engine's report: test_analysis_trust
    assert args.func(args) == 0
    return out


def test_analyze_json(sweep_csv, capsys):
    args = _parser().parse_args(
        [
            "analyze",
            str(sweep_csv / "results.csv"),
            "--json",
            "--bootstrap",
            "0",
            "--losses",
            str(sweep_csv / "losses.csv"),
            "--engine",
            "python",
        ]
    )
    assert args.func(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["engine"] == "python"
    assert all("Gaussian" in f["model"] and "not comparable" in f["model"] for f in data["plw_fits"])
    assert data["gam_model"].startswith("[python] pygam") and "score scale" in data["gam_model"]
    assert data["primary_metrics"] == {"arc": "acc", "piqa": "acc", "ppl": "ppl"}
    assert data["design"]["runs"] == 2 * 2 * (5 * 2 + 1)
    assert {f["dataset"] for f in data["plw_fits"]} == {"short", "long"}
    assert data["gam_optimal_plw"] and data["optimum_counts"]
    assert all(d["mean_rsd"] is not None for d in data["diagnostics"] if d["run_id"].split("|")[2] != "nan")


def test_analyze_bad_csv_is_one_line_error(tmp_path):
    from witune.data.errors import DataError

    (tmp_path / "r.csv").write_text("run_id,model\n1,m\n")
    args = _parser().parse_args(["analyze", str(tmp_path / "r.csv")])
    with pytest.raises(DataError, match=r"r.csv, line 1, field 'dataset'"):
        args.func(args)


def test_report_is_self_contained(report_path):
    text = report_path.read_text(encoding="utf-8")
    assert text.count('src="data:image/png;base64,') >= 4  # aggregates, heatmaps, PLW fit, GAM, dynamics
    for forbidden in ["http://", "https://", "<link", 'src="http']:
        assert forbidden not in text
    for heading in [
        "Sweep design",
        "Runs",
        "WIT view",
        "PLW view",
        "Recommendation",
        "Training dynamics",
        "Which engine and model fitted what",
        "Scores and diagnostics",
    ]:
        assert heading in text
    assert "engine: python" in text and "not comparable with the paper" in text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report_path, tmp_path):
    base = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--virtual-time-budget=10000",
    ]
    dom = subprocess.run(
        base + [f"--user-data-dir={tmp_path / 'u1'}", "--dump-dom", report_path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    # The inline script marks the page once loaded: every image decoded, no JavaScript error.
    assert 'data-done="1"' in dom
    assert 'data-broken="0"' in dom and 'data-errors="0"' in dom
    assert 'data-images="0"' not in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        base
        + [
            f"--user-data-dir={tmp_path / 'u2'}",
            f"--screenshot={shot}",
            "--window-size=1200,1800",
            report_path.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    from PIL import Image

    img = Image.open(shot).convert("L")
    colors = img.getcolors(maxcolors=1 << 20)
    assert img.size == (1200, 1800) and colors is not None and len(colors) > 50  # not a blank page
