"""One point of a sweep as typed parts: its `TrainConfig`, its DPO stage's `DPOConfig` (when the sweep chains
one), how it is evaluated (`EvalSpec`, whose defaults are the sweep's) and its design labels (`Labels`).

Stored in `sweep.db` as JSON (`to_json` / `from_json`); the JSON keeps the shape of older sweep folders, so
their points load too.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from witune.dpo.config import DPOConfig, load_dpo_config
from witune.results_schema import Labels, known_fields
from witune.train.config import TrainConfig, config_dict, load_config

# Stand-ins until the point runs: the sweep decides where (runs/<run_id>) and from which model (its SFT stage).
RUN_FOLDER = "<sweep folder>/runs/<run_id>"
SFT_MODEL = "<the point's SFT model>"


@dataclass
class EvalSpec:
    """How every stage of a point is evaluated; the sweep's `eval_*` keys take their defaults from here."""

    tasks: list[str] = field(default_factory=list)  # harness tasks and witune:<built-in> names
    limit: int | None = None  # items per task
    num_fewshot: int | None = None  # override the per-task presets
    max_new_tokens: int = 256  # generation built-ins
    batch_size: int = 8
    device: str = "cpu"
    data_dir: str | None = None  # evaluation files (default: $WITUNE_EVAL_DATA or ../shared/data/eval)
    weight_distance: bool = True  # L2 distance of the tuned weights from the base model

    def task_names(self, train_data: str) -> list[str]:
        """The tasks to run; a bare `witune:memorization` means "on this point's training data"."""
        return [f"witune:memorization={train_data}" if t == "witune:memorization" else t for t in self.tasks]


@dataclass
class Point:
    """One training (+ DPO) + evaluation of a sweep, with a stable id (`grid.point_id`)."""

    run_id: str
    train: TrainConfig  # output_dir is RUN_FOLDER: `train_config(folder)` gives the one to run
    labels: Labels
    eval: EvalSpec = field(default_factory=EvalSpec)
    dpo: DPOConfig | None = None  # model and output_dir are stand-ins: `dpo_config(...)` gives the one to run

    def train_config(self, output_dir: str | Path) -> TrainConfig:
        return dataclasses.replace(self.train, output_dir=str(output_dir))

    def dpo_config(self, model: str | Path, output_dir: str | Path) -> DPOConfig:
        assert self.dpo is not None, "this point has no DPO stage"
        return dataclasses.replace(self.dpo, model=str(model), output_dir=str(output_dir), progress=False)

    def train_keys(self) -> dict[str, Any]:
        """Every training key but output_dir: what the point's id hashes and its JSON stores."""
        return {k: v for k, v in config_dict(self.train).items() if k != "output_dir"}

    def to_json(self) -> str:
        d: dict[str, Any] = {
            "run_id": self.run_id,
            "train": self.train_keys(),
            "labels": dataclasses.asdict(self.labels),
            "eval": dataclasses.asdict(self.eval),
        }
        if self.dpo is not None:
            d["dpo"] = {k: v for k, v in dataclasses.asdict(self.dpo).items() if k not in ("model", "output_dir")}
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Point:
        d = json.loads(text)
        train = load_config(None, {**d["train"], "output_dir": RUN_FOLDER})
        # Older sweep folders stored only the given DPO keys: the stage's seed is the point's unless given.
        dpo = d.get("dpo") or None
        return cls(
            d["run_id"],
            train,
            Labels.from_dict(d.get("labels", {})),
            known_fields(EvalSpec, d.get("eval", {})),
            dpo_stage(dpo, train.seed) if dpo else None,
        )


def dpo_stage(keys: dict[str, Any], seed: int) -> DPOConfig:
    """The DPO stage of a point from a sweep's `dpo:` keys (checked now; model and output_dir set per point)."""
    return load_dpo_config(None, {"seed": seed, **keys, "model": SFT_MODEL, "output_dir": RUN_FOLDER})
