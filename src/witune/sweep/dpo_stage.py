"""The optional second stage of a sweep point: `witune dpo` on the point's SFT model, then the same evaluation.

Rows of this stage are stored with their task prefixed `dpo:` (`witune.sweep.db.STAGE_PREFIX`), so the
metrics table needs no new column and `results_frame(folder, stage="dpo")` reads them back. Like training,
DPO runs in its own `--resume` subprocess, and a `.trained` marker lets an interrupted evaluation skip it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from witune.sweep.db import STAGE_PREFIX
from witune.sweep.grid import Point
from witune.sweep.runner import TRAINED_MARKER, PointError, _last_error, _one_line, eval_tasks, run_logged

if TYPE_CHECKING:  # a type only: importing witune.eval at run time would load the evaluation code
    from witune.eval.rows import MetricRow


def train_dpo(point: Point, out: Path) -> Path:
    """DPO of `out/model` into `out/dpo` (continued from its newest checkpoint after a kill); the model folder."""
    from witune.dpo.config import load_dpo_config, to_yaml

    dpo_dir = out / "dpo"
    if (dpo_dir / TRAINED_MARKER).is_file() and (dpo_dir / "model").is_dir():
        return dpo_dir / "model"
    dpo_dir.mkdir(parents=True, exist_ok=True)
    cfg = load_dpo_config(
        None,
        {
            "seed": int(point.train.get("seed", 42)),
            **point.dpo,
            "model": str(out / "model"),
            "output_dir": str(dpo_dir),
            "progress": False,
        },
    )
    cfg_file = out / "dpo.yaml"
    cfg_file.write_text(to_yaml(cfg))
    log_file = out / "dpo.log"
    code = run_logged([sys.executable, "-m", "witune.cli.dpo", str(cfg_file), "--resume"], log_file)
    if code != 0:
        raise PointError(f"DPO exited with code {code}: {_last_error(log_file)} (log: {log_file})")
    (dpo_dir / TRAINED_MARKER).write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    return dpo_dir / "model"


def _pair_rows(dpo_dir: Path) -> list[MetricRow]:
    """DPO's own held-out numbers (when the stage held pairs out): loss, reward margin and accuracy after."""
    f = dpo_dir / "eval.json"
    after = json.loads(f.read_text()).get("after", {}) if f.is_file() else {}
    names = {
        "eval_loss": ("loss", False),
        "eval_rewards/margins": ("reward_margin", True),
        "eval_rewards/accuracies": ("reward_accuracy", True),
    }
    return [
        {"task": "dpo_pairs", "metric": m, "value": float(after[k]), "stderr": None, "higher_is_better": hib}
        for k, (m, hib) in names.items()
        if k in after
    ]


def dpo_rows(point: Point, out: Path) -> list[MetricRow]:
    """Train the DPO stage (unless done) and evaluate it with the point's tasks; rows prefixed `dpo:`."""
    from witune.eval import EvalOptions, evaluate

    model_dir = train_dpo(point, out)
    rows = _pair_rows(out / "dpo")
    tasks, ev = eval_tasks(point), point.eval
    if tasks:
        opts = EvalOptions(
            max_new_tokens=ev.get("max_new_tokens", 256),
            batch_size=ev.get("batch_size", 8),
            seed=int(point.train.get("seed", 0)),
        )
        try:
            rows += evaluate(
                str(model_dir),
                tasks,
                limit=ev.get("limit"),
                num_fewshot=ev.get("num_fewshot"),
                options=opts,
                device=ev.get("device", "cpu"),
                data_dir=ev.get("data_dir"),
            )
        except Exception as e:  # noqa: BLE001 - any evaluation failure is recorded on the point
            raise PointError(f"evaluation after DPO failed: {type(e).__name__}: {_one_line(e)}") from e
    return [{**r, "task": STAGE_PREFIX + r["task"]} for r in rows]
