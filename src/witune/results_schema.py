"""The results table and its rows: the one owner of the schema the sweep writes and the analysis reads.

At the bottom of the layers because every side uses it (the sweep sits below the analysis). A run's
measurements are `ResultRow`s with an explicit `stage` and `role`; `results_table` turns runs (id, design
`Labels`, rows) into the analysis table, one row per run x benchmark x metric::

    run_id, model, dataset, prompt_weight, response_weight, normalization, seed,
    benchmark, metric, score, higher_is_better, stderr, [rg, weight_distance, ... per-run columns]

Which metrics are diagnostics is declared once, where an evaluation is registered (`Diagnostics`, given to
`witune.eval.register_evaluator`, or beside what the sweep measures itself): diagnostics never vote.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")

# What identifies a run (its design): one value per run, repeated on each of its rows.
DESIGN_COLUMNS = ["run_id", "model", "dataset", "prompt_weight", "response_weight", "normalization", "seed"]
# Every results table has these; a CSV without one is refused.
REQUIRED = [*DESIGN_COLUMNS, "benchmark", "metric", "score", "higher_is_better"]

# The PLW paper's per-run training-dynamics diagnostics (section 5.3) measured by an evaluation, and with the
# loss stability (mean RSD, computed by the analysis from the loss table) the list the analysis plots.
PER_RUN_DIAGNOSTICS = ["weight_distance", "memorization_bleu", "generation_length"]
DIAGNOSTICS = ["mean_rsd", *PER_RUN_DIAGNOSTICS]
# Per-run columns every sweep's table has (NaN where not measured); declared columns add to them.
STANDARD_RUN_COLUMNS = ["rg", *PER_RUN_DIAGNOSTICS]

# Optional columns of lm-eval's group structure (stored by the sweep when it runs lm-eval; a CSV may carry them):
# the task's parent group (lm-eval's `group_subtasks`), the items it was scored on, and for a group row whether
# lm-eval weights its subtasks by size. `witune.analysis.groups` reads them.
STRUCTURE_COLUMNS = ["parent", "n_items", "weight_by_size"]
# Per-run number columns of every table (a CSV's text is converted to finite numbers or empty); the columns
# evaluators declare are converted by the same rule (`witune.analysis.results`).
NUMERIC_COLUMNS = STANDARD_RUN_COLUMNS
# Per-item scores (optional, for the noise guard's pairing over test items).
ITEM_COLUMNS = ["run_id", "benchmark", "metric", "item", "score"]

STAGES = ("sft", "dpo")  # a sweep point's training, and the DPO stage a sweep may chain after it
# score: a benchmark row that votes; diagnostic: beside the scores, never in an aggregate (a per-run column
# when declared with one, else a row the analysis recognises by the same declaration); detail: stored only.
ROLES = ("score", "diagnostic", "detail")


def known_fields(cls: type[T], d: Mapping[str, Any]) -> T:
    """A dataclass from stored JSON: the fields it has; the others keep their defaults."""
    return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Diagnostics:
    """Which metrics of one evaluation are diagnostics, and why: declared once, where it is registered.

    A metric in `columns` becomes that per-run column of the results table; one matching `details` (fnmatch
    patterns) is stored but left out of the table; one matching `metrics` is a diagnostic row. Any other
    metric of the evaluation is a score.
    """

    why: str
    metrics: tuple[str, ...] = ("*",)
    columns: Mapping[str, str] = field(default_factory=dict)
    details: tuple[str, ...] = ()

    def role(self, metric: str) -> tuple[str, str | None]:
        """(role, per-run column or None) of one of this evaluation's metrics."""
        if metric in self.columns:
            return "diagnostic", self.columns[metric]
        if any(fnmatch.fnmatchcase(metric, p) for p in self.details):
            return "detail", None
        if any(fnmatch.fnmatchcase(metric, p) for p in self.metrics):
            return "diagnostic", None
        return "score", None


@dataclass(frozen=True)
class Labels:
    """A run's design as the tables show it (short names: a file's stem, a folder's name)."""

    model: str = ""
    dataset: str = ""
    prompt_weight: float | None = None
    response_weight: float | None = None
    normalization: str = ""
    seed: int | None = None
    # The sweep's further weight axes this run trained with ("span_weights.think=0.5, dynamic_weight=dft");
    # "" for runs without any: the analysis never pools runs of different variants (workflows.analysis).
    variant: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Labels:
        """From stored JSON; keys it lacks (a run `witune eval --db` registered) keep their defaults."""
        return known_fields(cls, d)


@dataclass(frozen=True)
class ResultRow:
    """One measured number of one run: what `sweep.db` stores and `results_table` reads."""

    task: str  # an evaluation's name, with its argument (`witune:generation=FILE`): one row per file
    metric: str
    value: float | None  # None: not measured (NaN)
    stderr: float | None = None
    higher_is_better: bool = True
    stage: str = "sft"  # one of STAGES
    role: str = "score"  # one of ROLES
    column: str | None = None  # the per-run results column of a diagnostic declared with one
    # lm-eval's group structure of the task, where the harness gave it (STRUCTURE_COLUMNS)
    parent: str | None = None
    n_items: int | None = None
    weight_by_size: bool | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES or self.role not in ROLES:
            raise ValueError(f"result row {self.task}/{self.metric}: stage {self.stage!r}, role {self.role!r}")


def tag(row: Mapping[str, Any], declared: Diagnostics | None, stage: str = "sft") -> ResultRow:
    """An evaluation's plain row {task, metric, value, stderr, higher_is_better} with its stage and role."""
    role, column = declared.role(str(row["metric"])) if declared is not None else ("score", None)
    value = row.get("value")
    return ResultRow(
        str(row["task"]),
        str(row["metric"]),
        None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value),
        None if row.get("stderr") is None else float(row["stderr"]),
        bool(row.get("higher_is_better", True)),
        stage,
        role,
        column,
        None if row.get("parent") is None else str(row["parent"]),
        None if row.get("n_items") is None else int(row["n_items"]),
        None if row.get("weight_by_size") is None else bool(row["weight_by_size"]),
    )


def benchmark_name(task: str) -> str:
    """`witune_arc_challenge` -> `arc_challenge`: the local harness copies are the standard benchmarks."""
    return task.removeprefix("witune_")


def results_table(
    runs: Iterable[tuple[str, Labels, Iterable[ResultRow]]], stage: str = "sft", columns: Iterable[str] = ()
) -> pd.DataFrame:
    """The analysis table of `stage` from runs (id, labels, rows of every stage): scores and diagnostic rows
    as rows, diagnostics declared with a column as per-run columns (NaN where a run has none; `columns` names
    more to have), and a `stage` column. Details are left out."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    per_run: dict[str, dict[str, float]] = {}
    structured = False
    columns = dict.fromkeys([*STANDARD_RUN_COLUMNS, *columns])
    for run_id, labels, results in runs:
        per_run[run_id] = {}
        for r in results:
            if r.column:
                columns.setdefault(r.column)  # a column exists once any stage declares it
            if r.stage != stage or r.role == "detail" or r.value is None:
                continue
            if r.column:
                per_run[run_id][r.column] = r.value
                continue
            structured = structured or r.parent is not None or r.n_items is not None
            rows.append(
                {
                    "run_id": run_id,
                    **dataclasses.asdict(labels),
                    "benchmark": benchmark_name(r.task),
                    "metric": r.metric,
                    "score": r.value,
                    "higher_is_better": r.higher_is_better,
                    "stderr": math.nan if r.stderr is None else r.stderr,
                    "parent": benchmark_name(r.parent or ""),
                    "n_items": r.n_items,
                    "weight_by_size": r.weight_by_size,
                }
            )
    # lm-eval's group structure only where some row has it (witune.analysis.groups infers it otherwise)
    frame = pd.DataFrame(rows, columns=[*REQUIRED, "stderr", *STRUCTURE_COLUMNS, "variant"])
    if not structured:
        frame = frame.drop(columns=STRUCTURE_COLUMNS)
    if not (frame["variant"] != "").any():  # a column only for sweeps with further weight axes
        frame = frame.drop(columns=["variant"])
    for col in columns:
        frame[col] = [per_run.get(rid, {}).get(col, math.nan) for rid in frame["run_id"]]
    frame["stage"] = stage
    return frame
