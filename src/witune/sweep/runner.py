"""Run one sweep point: train (`witune.sweep.stage`), measure, evaluate, record; then the DPO stage when the
sweep chains one (`witune.sweep.dpo_stage`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from witune.atomic import atomic_write_text
from witune.data.readers import DATA_SUFFIXES
from witune.eval.rows import metric_row
from witune.results_schema import ResultRow
from witune.sweep import db
from witune.sweep.point import Point
from witune.sweep.rows import DATA_RG, WEIGHT_DISTANCE, tag_rows
from witune.sweep.stage import PointError, evaluate_stage, train_stage
from witune.train.config import TrainConfig


@dataclass
class PointResult:
    rows: list[ResultRow] = field(default_factory=list)  # evaluation rows + diagnostics, of every stage
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) from metrics.jsonl


def run_dir(sweep_dir: str | Path, run_id: str) -> Path:
    return Path(sweep_dir) / "runs" / run_id


def data_rg(train: TrainConfig, tokenizer_dir: Path) -> float:
    """Rg (ratio of means: completion tokens / prompt tokens) of the data this point trained on, counted with the
    tokenizer of the trained model (``witune.stats``, as `witune stats` reports it), over the records trained on."""
    from witune.data import load_examples
    from witune.stats import ratio_stats, sample_lengths
    from witune.stats.loading import get_tokenizer

    examples = load_examples(train.data, format=train.format, limit=train.limit).examples
    return ratio_stats(sample_lengths(examples, get_tokenizer(str(tokenizer_dir)))).ratio_of_means


def read_losses(metrics_file: Path) -> list[tuple[int, float]]:
    if not metrics_file.is_file():
        return []
    out = []
    for line in metrics_file.read_text().splitlines():
        if line.strip():
            m = json.loads(line)
            out.append((int(m["step"]), float(m["loss"])))
    return out


def check_data(data: str) -> None:
    """Fail a point whose training file is missing at once, instead of after a trainer has started."""
    p = Path(data).expanduser()
    if p.suffix in DATA_SUFFIXES and not p.exists():
        raise PointError(f"training data file not found: {data}")


def execute_point(point: Point, out: Path) -> PointResult:
    """Train, then measure and evaluate the trained model. Touches no database (Ray runs this remotely)."""
    train = point.train
    check_data(train.data)
    model_dir = train_stage("sft", point.train_config(out), out)
    result = PointResult(losses=read_losses(out / "metrics.jsonl"))
    measured = []
    full_model = train.lora_r == 0 or train.merge_lora  # an unmerged adapter folder is not a full model
    if point.eval.weight_distance and full_model:
        from witune.models.distance import weight_distance

        try:
            measured.append(metric_row(WEIGHT_DISTANCE, "l2", weight_distance(train.model, model_dir), None, False))
        except (OSError, ValueError, RuntimeError) as e:  # a diagnostic: its failure must not fail the point
            print(f"weight distance skipped for {point.run_id}: {e}", file=sys.stderr)
    try:  # the per-dataset Rg that the GAM and the correlations need: a column, never a score
        measured.append(metric_row(DATA_RG, "ratio_of_means", data_rg(train, model_dir), None))
    except (OSError, ValueError, RuntimeError) as e:  # bookkeeping: its failure must not fail the point
        print(f"Rg skipped for {point.run_id}: {e}", file=sys.stderr)
    result.rows = tag_rows(measured) + evaluate_stage(point, model_dir, "sft")
    if point.dpo is not None:  # second stage: DPO on this SFT model, evaluated the same way
        from witune.sweep.dpo_stage import dpo_rows

        result.rows += dpo_rows(point, out)
    rows = [asdict(r) for r in result.rows]
    atomic_write_text(out / "results.json", json.dumps({"run_id": point.run_id, "results": rows}, indent=1))
    return result


@contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so that what libraries and C code
    write goes there too) to `path` for the duration; a worker process runs one point at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(path, "a") as f:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def run_point(sweep_dir: str | Path, run_id: str) -> str:
    """Run one point recorded in the sweep database and record its outcome; returns 'done' or 'failed'.
    Never raises for a failing point: the error text goes into the database and the other points go on."""
    sweep_dir = Path(sweep_dir)
    rows = [r for r in db.runs(sweep_dir) if r["run_id"] == run_id]
    if not rows:
        raise KeyError(f"run {run_id} is not in {db.db_path(sweep_dir)}")
    db.mark_running(sweep_dir, run_id)
    out = run_dir(sweep_dir, run_id)
    try:
        point = Point.from_json(json.dumps(rows[0]["point"]))  # a stored point that no longer loads fails
        with output_to(out / "eval.log"):  # harness logs and progress bars would garble the sweep's own
            result = execute_point(point, out)
    except Exception as e:  # noqa: BLE001 - recorded, never propagated
        db.mark_failed(sweep_dir, run_id, str(e) if isinstance(e, PointError) else f"{type(e).__name__}: {e}")
        return "failed"
    db.finish_run(sweep_dir, run_id, result.rows, result.losses)
    return "done"
