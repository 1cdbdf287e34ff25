"""`witune sweep` configuration: a base training config plus grid axes, flat, read from YAML.

Example (every key optional except a base config or `set: {data: ...}`)::

    base: ../alpaca.yaml            # training config (path relative to this file) or an inline mapping
    set: {max_steps: 200}           # training keys applied to every point
    preset: plw-paper               # or: weights: [[0, 1], [0.1, 1]] / plw: [...] / prompt_weights + response_weights
    datasets: [data/alpaca.json]    # axes: each a list; the grid is their product
    models: [smollm2]
    seeds: [1, 2]
    normalization: [nonzero]
    eval_tasks: [witune_arc_challenge, "witune:generation_length"]
    eval_limit: 100
    workers: 2
    output_dir: sweeps/plw
    search: halving                 # optional budgeted search (witune.sweep.halving); default grid
    halving_heldout: data/heldout.jsonl

The kernel of every witune config reads it (`witune.flat_config`: types, ranges, duplicate keys, alias bombs).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from witune.data.errors import ConfigError
from witune.flat_config import FiniteFloat, FlatConfig, at_least, one_of, optional
from witune.loss.normalization import Normalization
from witune.sweep.point import EvalSpec
from witune.train.fields import check_weights
from witune.yaml_io import load_yaml_file

# PLW paper: the prompt-loss weights it trained with (response weight 1).
PLW_PAPER = [0.0, 5e-4, 2.236e-3, 1e-2, 2.463e-2, 5e-2, 1e-1, 2.463e-1, 5e-1, 1.0]
# WIT paper: lambda_p, lambda_r in {0, 0.2, ..., 1}; (0, 0) trains nothing and is left out.
_WIT_STEPS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
PRESETS: dict[str, list[tuple[float, float]]] = {
    "plw-paper": [(p, 1.0) for p in PLW_PAPER],
    "wit-grid": [(p, r) for p in _WIT_STEPS for r in _WIT_STEPS if (p, r) != (0.0, 0.0)],
}
BACKENDS = ("local", "ray")
SEARCHES = ("grid", "halving")
# Keys whose null means "not given" (an empty axis or mapping), as an empty YAML entry reads.
_NULL_IS_EMPTY = {"set", "dpo", "weights", "plw", "prompt_weights", "response_weights", "normalization"}
_NULL_IS_EMPTY |= {"datasets", "models", "seeds", "eval_tasks"}


@dataclass
class SweepConfig(FlatConfig):
    """A base training config, the grid axes, evaluation settings and how to run the points."""

    base: dict[str, Any] = field(default_factory=dict)
    """Training config: a file (relative to the sweep file) or a mapping of training keys."""
    base_path: str | None = None
    """The base config file, resolved (kept for the record)."""
    set: dict[str, Any] = field(default_factory=dict)
    """Training keys applied to every point, after the base config."""
    # --- grid axes (empty list: the axis is not swept, the base value is used)
    preset: str | None = None
    """plw-paper or wit-grid: the weight pairs of the paper."""
    weights: list[tuple[FiniteFloat, FiniteFloat]] = field(default_factory=list)
    """Explicit (prompt, response) weight pairs, e.g. [[0, 1], [0.1, 1]]."""
    plw: list[FiniteFloat] = field(default_factory=list)
    """Prompt-loss weights, response weight 1."""
    prompt_weights: list[FiniteFloat] = field(default_factory=list)
    """Prompt weights, crossed with response_weights."""
    response_weights: list[FiniteFloat] = field(default_factory=list)
    """Response weights, crossed with prompt_weights."""
    normalization: list[Normalization] = field(default_factory=list)
    """Normalisers of the step (nonzero, weight_sum, tokens or a number)."""
    datasets: list[str] = field(default_factory=list)
    """Training data files (one axis value each)."""
    models: list[str] = field(default_factory=list)
    """Models to fine-tune."""
    seeds: list[int] = field(default_factory=list)
    """Seeds."""
    weight_axes: dict[str, Any] = field(default_factory=dict)
    """Further weight axes, each a weight setting and its values: `span_weights.think: [0.5, 1.0]`,
    `role_weights.system: [0.0, 1.0]`, `dynamic_weight: [none, dft]`. They cross with the other axes, and their
    values label each point (the `variant` design column); `witune analyze` analyses one variant at a time
    (`--variant`), never pooling runs that trained with other weights. Message and sample weights live in the
    data: give each weighting as its own file on the `datasets` axis."""
    # --- evaluation of each trained point (defaults: witune.sweep.point.EvalSpec)
    eval_tasks: list[str] = field(default_factory=list)
    """Harness tasks and witune:<built-in> names."""
    eval_limit: int | None = EvalSpec.limit
    """Items per task (null: all)."""
    eval_num_fewshot: int | None = EvalSpec.num_fewshot
    """Few-shot examples, overriding the per-task presets (null: the presets)."""
    eval_max_new_tokens: int = EvalSpec.max_new_tokens
    """Tokens generated per answer by the generation built-ins."""
    eval_batch_size: int = EvalSpec.batch_size
    """Evaluation batch size."""
    eval_device: str = EvalSpec.device
    """Device of the evaluations."""
    eval_data_dir: str | None = EvalSpec.data_dir
    """Evaluation files (default: $WITUNE_EVAL_DATA or ../shared/data/eval)."""
    allow_weight_above_one: bool = False
    """Weights above the papers' range [0, 1] (a warning is printed)."""
    weight_distance: bool = EvalSpec.weight_distance
    """Measure the L2 distance of the tuned weights from the base model, per run."""
    # --- optional second stage
    dpo: dict[str, Any] = field(default_factory=dict)
    """`witune dpo` keys (data: preference pairs, beta, ...) run on each point's SFT model and evaluated with the
    same tasks; empty: SFT only. The model and output_dir keys are set per point."""
    # --- execution
    workers: int = 1
    """Points trained at the same time (local backend)."""
    backend: str = "local"
    """local (worker processes) or ray."""
    ray_address: str | None = None
    """Ray cluster address; null starts a local Ray instance."""
    output_dir: str = "sweeps/sweep"
    """Sweep folder: sweep.db, runs/<run_id>/."""
    max_points: int = 1000
    """The most points a grid may have (each point is a full training); a bigger grid is refused before anything
    runs: raise this to run one on purpose."""
    # --- budgeted search (witune.sweep.halving)
    search: str = "grid"
    """grid (every point trains to the end) or halving (successive halving: every configuration trains the first
    rung, is scored on the held-out response NLL, the best 1/halving_eta continue from their checkpoints)."""
    halving_eta: int = 3
    """Successive halving: 1/eta of the configurations of each (model, dataset) continue at each rung."""
    halving_rungs: int = 3
    """Successive halving: rungs; rung k trains max_steps // eta^(rungs-1-k) steps (the last: max_steps). Put the
    first rung well past the warmup: a ranking taken earlier can be the reverse of the final one."""
    halving_first_rung: float | None = None
    """Successive halving: the fraction of max_steps at which the first rung ends, the later rungs evenly
    spaced up to max_steps (never inside the warmup: the first rung is moved past it); null: the rungs of
    halving_rungs above. `witune tune` uses 1/3."""
    curve_every: int | None = None
    """Grid search: also score every point on halving_heldout every N optimizer steps (its learning curve, in
    sweep.db's rungs table and runs/<run_id>/heldout_step<N>.json; every point trains to the end), so that search
    strategies can be replayed from the stored curves without training again (bench/bench_tune_replay.py)."""
    halving_heldout: str | None = None
    """Successive halving: held-out records (a data file) whose response NLL per token ranks the points."""
    halving_heldout_limit: int | None = 200
    """Successive halving: use the first N held-out records (null: all)."""

    INTERNAL = ("base_path",)
    RANGES = {
        "preset": optional(one_of(sorted(PRESETS))),
        "backend": one_of(BACKENDS),
        "workers": at_least(1),
        "max_points": at_least(1),
        "eval_limit": optional(at_least(1)),
        "eval_batch_size": at_least(1),
        "eval_max_new_tokens": at_least(1),
        "eval_num_fewshot": optional(at_least(0)),
        "search": one_of(SEARCHES),
        "halving_eta": at_least(2),
        "halving_rungs": at_least(2),
        "halving_heldout_limit": optional(at_least(1)),
        "curve_every": optional(at_least(1)),
    }

    @classmethod
    def unknown_key_hint(cls, unknown: list[str]) -> str:
        if "data" in unknown or "model" in unknown:
            return " (training keys go under 'set:' or in the 'base' config)"
        return ""

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from super().problems()
        for p, r in self.weight_pairs():
            if p < 0 or r < 0 or (p == 0 and r == 0):
                yield "weights", f"pair ({p}, {r}) is invalid: weights must be >= 0 and not both 0"
        if not (self.datasets or self.base.get("data") or self.set.get("data")):
            yield "datasets", "is empty and there is no training data: give 'datasets', or 'data' in 'base' or 'set'"
        for key, values in self.weight_axes.items():
            why = weight_axis_problem(key, values)
            if why:
                yield "weight_axes", why
        if self.n_points() > self.max_points:
            yield (
                "max_points",
                (
                    f"allows fewer points than the grid's {self.n_points():,} (the product of its axes): shrink "
                    "an axis, or raise max_points to run it on purpose"
                ),
            )
        if "output_dir" in self.set:  # a base config's output_dir is simply replaced by runs/<run_id>
            yield "set", "may not hold 'output_dir': each point trains in <output_dir>/runs/<run_id>"
        if self.search == "halving" or self.curve_every:
            yield from self._halving_problems()

    def _halving_problems(self) -> Iterator[tuple[str, str]]:
        if not self.halving_heldout:
            yield (
                "halving_heldout",
                "is required with search: halving or curve_every (held-out records that score the points)",
            )
        elif not Path(self.halving_heldout).expanduser().exists():
            yield "halving_heldout", f"file not found: {self.halving_heldout}"
        first = self.halving_first_rung
        if first is not None and not 0 < first < 1:
            yield "halving_first_rung", f"must be a fraction of max_steps between 0 and 1 (exclusive), got {first}"
            return
        if self.dpo:
            yield "search", "halving and curve_every score SFT points only: they cannot be combined with a 'dpo' stage"
        max_steps = int({**self.base, **self.set}.get("max_steps", 0) or 0)
        if max_steps <= 0:
            yield "search", "halving needs max_steps > 0 in 'base' or 'set' (the rungs are counted in steps)"
            return
        steps = self.rung_steps()
        if steps[0] < 1 or any(a >= b for a, b in zip(steps, steps[1:], strict=False)):
            yield (
                "halving_rungs",
                f"{self.halving_rungs} rungs with eta {self.halving_eta} and max_steps {max_steps} give steps "
                f"{steps}: each rung must train more steps than the one before (fewer rungs or more max_steps)",
            )

    def rung_steps(self) -> list[int]:
        """Optimizer steps at the end of each rung of successive halving (the last: the points' max_steps)."""
        train = {**self.base, **self.set}
        max_steps = int(train.get("max_steps", 0) or 0)
        if self.search == "grid" and self.curve_every:
            return [*range(self.curve_every, max_steps, self.curve_every), max_steps]
        if self.halving_first_rung is None:
            return rung_steps(max_steps, self.halving_eta, self.halving_rungs)
        warmup = math.ceil(float(train.get("warmup_ratio", 0.0) or 0.0) * max_steps)
        return fraction_rungs(max_steps, self.halving_first_rung, self.halving_rungs, warmup)

    def validate(self) -> SweepConfig:
        super().validate()
        weights = {k: max(getattr(self, k), default=None) for k in ("plw", "prompt_weights", "response_weights")}
        check_weights(
            {**weights, "weights": max((x for pair in self.weights for x in pair), default=None)},
            self.allow_weight_above_one,
        )
        return self

    def n_points(self) -> int:
        """Points of the grid, counted from its axes before any is built (values that resolve to the same
        training are merged later, so the grid can only be smaller)."""
        sizes = [len(self.models), len(self.datasets), len(self.weight_pairs()), len(self.normalization)]
        sizes += [len(self.seeds), *(len(v) for v in self.weight_axes.values() if isinstance(v, list))]
        return math.prod(max(1, n) for n in sizes)

    def weight_pairs(self) -> list[tuple[float, float]]:
        """The (prompt, response) pairs of the weight axes, in order; [] when no weight axis is given."""
        pairs: list[tuple[float, float]] = []
        if self.preset is not None:
            pairs += PRESETS.get(self.preset, [])
        pairs += [(float(p), float(r)) for p, r in self.weights]
        pairs += [(float(p), 1.0) for p in self.plw]
        if self.prompt_weights or self.response_weights:
            ps = self.prompt_weights or [float(self.base.get("prompt_weight", 0.0))]
            rs = self.response_weights or [float(self.base.get("response_weight", 1.0))]
            pairs += [(float(p), float(r)) for p in ps for r in rs if (p, r) != (0, 0)]
        seen: set[tuple[float, float]] = set()
        return [p for p in pairs if not (p in seen or seen.add(p))]  # type: ignore[func-returns-value]

    def eval_spec(self) -> EvalSpec:
        """How each point is evaluated."""
        return EvalSpec(
            list(self.eval_tasks),
            self.eval_limit,
            self.eval_num_fewshot,
            self.eval_max_new_tokens,
            self.eval_batch_size,
            self.eval_device,
            self.eval_data_dir,
            self.weight_distance,
        )


WEIGHT_AXIS_KEYS = ("span_weights.<span>", "role_weights.<role>", "dynamic_weight")


def weight_axis_problem(key: str, values: Any) -> str | None:
    """What is wrong with one `weight_axes` entry, or None."""
    head, dot, name = key.partition(".")
    if not ((head in ("span_weights", "role_weights") and dot and name) or key == "dynamic_weight"):
        return f"has {key!r}; a weight axis is one of {', '.join(WEIGHT_AXIS_KEYS)}"
    if not isinstance(values, list) or not values:
        return f"{key!r} needs a non-empty list of values, got {values!r}"
    if len({json.dumps(v) for v in values}) < len(values):
        return f"{key!r} lists a value twice"
    if key == "dynamic_weight":
        bad = [v for v in values if not isinstance(v, str)]
    else:
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)]
    return (
        f"{key!r} has values that are not {'names' if key == 'dynamic_weight' else 'numbers'}: {bad}" if bad else None
    )


def rung_steps(max_steps: int, eta: int, rungs: int) -> list[int]:
    """Rung k of `rungs` ends at max_steps // eta^(rungs-1-k): e.g. 27 steps, eta 3, 3 rungs -> [3, 9, 27]."""
    return [max_steps // eta ** (rungs - 1 - k) for k in range(rungs)]


def fraction_rungs(max_steps: int, first: float, rungs: int, warmup: int = 0) -> list[int]:
    """Rungs from `first` x max_steps (at least one step past the warmup) to max_steps, evenly spaced (so that
    learning curves stored every few steps hold every rung: `witune.workflows.replay`).

    >>> fraction_rungs(27, 1 / 3, 3), fraction_rungs(27, 1 / 3, 2), fraction_rungs(27, 0.05, 2, warmup=3)
    ([9, 18, 27], [9, 27], [4, 27])
    """
    start = min(max(round(first * max_steps), warmup + 1), max_steps)
    if rungs < 2:
        return [max_steps]
    return [round(start + (max_steps - start) * k / (rungs - 1)) for k in range(rungs - 1)] + [max_steps]


def load_sweep_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepConfig:
    """Read a sweep YAML; `overrides` (from the command line: workers, backend, output_dir) win.

    Errors name the file and the key; a relative `base` path is resolved against the sweep file's folder.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"sweep config not found: {p}")
    raw = load_yaml_file(p) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of key: value at the top level")
    raw.setdefault("output_dir", str(Path("sweeps") / p.stem))
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return sweep_config_from_dict(raw, where=str(p), root=p.parent)


def sweep_config_from_dict(raw: dict[str, Any], where: str = "<sweep>", root: Path | None = None) -> SweepConfig:
    """Build and check a SweepConfig from a plain mapping (a YAML file's content)."""
    values = {k: v for k, v in raw.items() if not (v is None and k in _NULL_IS_EMPTY)}
    base = values.pop("base", None)
    base_path = None
    if isinstance(base, str):
        base_file = Path(base) if Path(base).is_absolute() or root is None else root / base
        if not base_file.is_file() and Path(base).is_file():
            base_file = Path(base)  # relative to the current folder, as a fallback
        if not base_file.is_file():
            raise ConfigError(f"{where}: key 'base': training config not found: {base}")
        base_path = str(base_file.resolve())
        base = load_yaml_file(base_file) or {}
    if base is not None and not isinstance(base, dict):
        raise ConfigError(f"{where}: key 'base' must be a file path or a mapping of training keys")
    cfg = SweepConfig.from_values({**values, "base": base or {}}, where)
    cfg.base_path = base_path
    try:
        return cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
