"""The optional second stage of a sweep point: `witune dpo` on the point's SFT model, then the same evaluation.

Its rows are `ResultRow`s with `stage="dpo"` (older sweep folders marked them with a `dpo:` task prefix, still
read), so `results_frame(folder, stage="dpo")` reads them back. Like training, DPO runs in its own `--resume`
subprocess (`witune.sweep.stage`), and a `.trained` marker lets an interrupted evaluation skip it.
"""

from __future__ import annotations

import json
from pathlib import Path

from witune.eval.rows import metric_row
from witune.results_schema import ResultRow
from witune.sweep.point import Point
from witune.sweep.rows import DPO_PAIRS, tag_rows
from witune.sweep.stage import evaluate_stage, train_stage

# DPO's own numbers on its held-out pairs (TRL's names) -> (metric, higher is better)
_PAIR_METRICS = {
    "eval_loss": ("loss", False),
    "eval_rewards/margins": ("reward_margin", True),
    "eval_rewards/accuracies": ("reward_accuracy", True),
}


def _pair_rows(dpo_dir: Path) -> list[ResultRow]:
    """DPO's own held-out numbers (when the stage held pairs out): loss, reward margin and accuracy after."""
    f = dpo_dir / "eval.json"
    after = json.loads(f.read_text()).get("after", {}) if f.is_file() else {}
    rows = [metric_row(DPO_PAIRS, m, float(after[k]), None, hib) for k, (m, hib) in _PAIR_METRICS.items() if k in after]
    return tag_rows(rows, "dpo")


def dpo_rows(point: Point, out: Path) -> list[ResultRow]:
    """DPO of `out/model` into `out/dpo` (continued from its newest checkpoint after a kill, skipped when done),
    evaluated with the point's tasks: the stage's result rows."""
    model_dir = train_stage("dpo", point.dpo_config(out / "model", out / "dpo"), out)
    return _pair_rows(out / "dpo") + evaluate_stage(point, model_dir, "dpo")
