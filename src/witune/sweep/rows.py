"""A sweep's result rows: every evaluation row tagged with its stage and role, from the one declaration.

Evaluators declare their diagnostics when they are registered (`witune.eval.register_evaluator`); what the
sweep measures itself (weight distance, the data's Rg, DPO's held-out pairs) is declared here, next to the
code that measures it. `tag_rows` is the one place that reads those declarations for the sweep.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from witune.results_schema import Diagnostics, ResultRow, tag

WEIGHT_DISTANCE = "weight_distance"
DATA_RG = "witune:data_rg"
DPO_PAIRS = "dpo_pairs"
MEASURED: dict[str, Diagnostics] = {
    WEIGHT_DISTANCE: Diagnostics(
        "distance moved from the base weights, a mechanism diagnostic", columns={"l2": "weight_distance"}
    ),
    DATA_RG: Diagnostics("Rg of the training data, a property of the data", columns={"ratio_of_means": "rg"}),
    DPO_PAIRS: Diagnostics(
        "DPO's own held-out preference pairs", columns={"reward_margin": "dpo_reward_margin"}, details=("*",)
    ),
}
# How sweep.db files from before the stage column marked the rows of a point's DPO stage.
LEGACY_STAGE_PREFIX = "dpo:"


def declared(task: str) -> Diagnostics | None:
    """Which metrics of `task` are diagnostics: the sweep's own measurements, else the evaluator's declaration."""
    if task in MEASURED:
        return MEASURED[task]
    from witune.eval import declared_diagnostics

    return declared_diagnostics(task)


def declared_columns() -> list[str]:
    """Every per-run column a sweep's diagnostics declare (its results tables have them all, NaN if unmeasured)."""
    from witune.eval.builtins import DIAGNOSTICS

    return sorted({c for d in [*MEASURED.values(), *DIAGNOSTICS.values()] for c in d.columns.values()})


def tag_rows(rows: Iterable[Mapping[str, Any] | ResultRow], stage: str = "sft") -> list[ResultRow]:
    """Evaluation rows {task, metric, value, stderr, higher_is_better} as `ResultRow`s of `stage`."""
    return [r if isinstance(r, ResultRow) else tag(r, declared(str(r["task"])), stage) for r in rows]


def legacy_row(row: Mapping[str, Any]) -> ResultRow:
    """A row of an older sweep.db (task prefixed `dpo:` for the DPO stage, no role): read as it meant."""
    task = str(row["task"])
    stage = "dpo" if task.startswith(LEGACY_STAGE_PREFIX) else "sft"
    task = task.removeprefix(LEGACY_STAGE_PREFIX)
    return tag({**row, "task": task}, declared(task), stage)
