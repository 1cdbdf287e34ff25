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
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from witune.data.errors import ConfigError
from witune.data.weights import check_weight_range
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


@dataclass
class SweepConfig:
    """A base training config, the grid axes, evaluation settings and how to run the points."""

    base: dict[str, Any] = field(default_factory=dict)  # training keys of the base config (file already read)
    base_path: str | None = None  # the base config file, when given as a path (kept for the record)
    set: dict[str, Any] = field(default_factory=dict)  # training keys applied to every point, after base
    # --- grid axes (empty list: the axis is not swept, the base value is used)
    preset: str | None = None  # plw-paper or wit-grid: the weight pairs of the paper
    weights: list[tuple[float, float]] = field(default_factory=list)  # explicit (prompt, response) pairs
    plw: list[float] = field(default_factory=list)  # prompt-loss weights, response at 1
    prompt_weights: list[float] = field(default_factory=list)  # crossed with response_weights
    response_weights: list[float] = field(default_factory=list)
    normalization: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    # --- evaluation of each trained point
    eval_tasks: list[str] = field(default_factory=list)  # harness tasks and witune:<built-in> names
    eval_limit: int | None = None  # items per task
    eval_num_fewshot: int | None = None  # override the per-task presets
    eval_max_new_tokens: int = 256  # generation built-ins
    eval_batch_size: int = 8
    eval_device: str = "cpu"
    eval_data_dir: str | None = None  # evaluation files (default: $WITUNE_EVAL_DATA or ../shared/data/eval)
    allow_weight_above_one: bool = False  # weights above the papers' range [0, 1] (a warning is printed)
    weight_distance: bool = True  # L2 distance of the tuned weights from the base model, per run
    # --- optional second stage: `witune dpo` keys (data: preference pairs, beta, ...) run on each point's SFT
    # model, evaluated with the same tasks; empty: SFT only. The model and output_dir keys are set per point.
    dpo: dict[str, Any] = field(default_factory=dict)
    # --- execution
    workers: int = 1  # points trained at the same time (local backend)
    backend: str = "local"  # local (worker processes) or ray
    ray_address: str | None = None  # Ray cluster address; None starts a local Ray instance
    output_dir: str = "sweeps/sweep"  # sweep folder: sweep.db, runs/<run_id>/

    def weight_pairs(self) -> list[tuple[float, float]]:
        """The (prompt, response) pairs of the weight axes, in order; [] when no weight axis is given."""
        pairs: list[tuple[float, float]] = []
        if self.preset is not None:
            pairs += PRESETS[self.preset]
        pairs += [(float(p), float(r)) for p, r in self.weights]
        pairs += [(float(p), 1.0) for p in self.plw]
        if self.prompt_weights or self.response_weights:
            ps = self.prompt_weights or [float(self.base.get("prompt_weight", 0.0))]
            rs = self.response_weights or [float(self.base.get("response_weight", 1.0))]
            pairs += [(float(p), float(r)) for p in ps for r in rs if (p, r) != (0, 0)]
        seen: set[tuple[float, float]] = set()
        return [p for p in pairs if not (p in seen or seen.add(p))]  # type: ignore[func-returns-value]


_LIST_KEYS = {
    "weights",
    "plw",
    "prompt_weights",
    "response_weights",
    "normalization",
    "datasets",
    "models",
    "seeds",
    "eval_tasks",
}


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
    valid = [f.name for f in dataclasses.fields(SweepConfig) if f.name != "base_path"]
    unknown = [k for k in raw if k not in valid]
    if unknown:
        hint = (
            " (training keys go under 'set:' or in the 'base' config)"
            if "data" in unknown or "model" in unknown
            else ""
        )
        raise ConfigError(f"{where}: unknown key(s) {unknown}{hint}; valid keys: {', '.join(valid)}")
    values = dict(raw)
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
    for key in _LIST_KEYS:
        v = values.get(key)
        if v is None:
            values.pop(key, None)
        elif isinstance(v, (str, int, float)) and key != "weights":
            values[key] = [v]  # a single value is a one-element axis
        elif not isinstance(v, list):
            raise ConfigError(f"{where}: key '{key}' must be a list, got {v!r}")
    for key in ("set", "dpo"):
        if values.get(key) is None:
            values.pop(key, None)
        elif not isinstance(values[key], dict):
            raise ConfigError(f"{where}: key '{key}' must be a mapping of {'DPO' if key == 'dpo' else 'training'} keys")
    try:
        values["weights"] = [_pair(w) for w in values.get("weights", [])]
        for key in ("plw", "prompt_weights", "response_weights"):
            values[key] = [_number(x, key) for x in values.get(key, [])]
        values["seeds"] = [_integer(x, "seeds") for x in values.get("seeds", [])]
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None
    for key in ("datasets", "models", "normalization", "eval_tasks"):
        values[key] = [str(x) for x in values.get(key, [])]
    cfg = SweepConfig(base=dict(base or {}), base_path=base_path, **values)
    return validate(cfg, where)


def _pair(w: Any) -> tuple[float, float]:
    if not isinstance(w, (list, tuple)) or len(w) != 2:
        raise ValueError(f"key 'weights' expects [prompt, response] pairs, got {w!r}")
    return _number(w[0], "weights"), _number(w[1], "weights")


def _number(x: Any, key: str) -> float:
    """A finite weight: YAML's .nan and .inf read as floats, and float('nan') would make a point that
    trains nothing (or NaN losses) without a word."""
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        raise ValueError(f"key '{key}' expects numbers, got {x!r}")
    try:
        value = float(x)
    except ValueError:
        raise ValueError(f"key '{key}' expects numbers, got {x!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"key '{key}' expects finite numbers, got {x!r}")
    return value


def _integer(x: Any, key: str) -> int:
    """A whole number: int(1.5) and int(1.7) are both 1, which silently merged two seeds into one."""
    if isinstance(x, bool) or not (isinstance(x, int) or (isinstance(x, float) and x.is_integer())):
        raise ValueError(f"key '{key}' expects whole numbers, got {x!r}")
    return int(x)


def validate(cfg: SweepConfig, where: str = "<sweep>") -> SweepConfig:
    """Checks that no type expresses; raises ConfigError naming the key."""
    if cfg.preset is not None and cfg.preset not in PRESETS:
        raise ConfigError(f"{where}: key 'preset' must be one of {sorted(PRESETS)}, got {cfg.preset!r}")
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"{where}: key 'backend' must be one of {BACKENDS}, got {cfg.backend!r}")
    if not isinstance(cfg.workers, int) or cfg.workers < 1:
        raise ConfigError(f"{where}: key 'workers' must be an integer >= 1, got {cfg.workers!r}")
    if cfg.eval_limit is not None and (not isinstance(cfg.eval_limit, int) or cfg.eval_limit < 1):
        raise ConfigError(f"{where}: key 'eval_limit' must be an integer >= 1 or null, got {cfg.eval_limit!r}")
    for p, r in cfg.weight_pairs():
        if p < 0 or r < 0 or (p == 0 and r == 0):
            raise ConfigError(f"{where}: weight pair ({p}, {r}) is invalid: weights must be >= 0 and not both 0")
    if not isinstance(cfg.allow_weight_above_one, bool):
        raise ConfigError(f"{where}: key 'allow_weight_above_one' must be true or false")
    for key in ("plw", "prompt_weights", "response_weights", "weights"):
        values = [x for pair in cfg.weights for x in pair] if key == "weights" else getattr(cfg, key)
        for warning in check_weight_range(
            {f"{where}: key '{key}' value": max(values, default=None)},
            cfg.allow_weight_above_one,
            "set allow_weight_above_one: true",
        ):
            print(f"warning: {warning}", file=sys.stderr)
    for key, low in (("eval_batch_size", 1), ("eval_max_new_tokens", 1), ("eval_num_fewshot", 0)):
        v = getattr(cfg, key)
        if v is None and key == "eval_num_fewshot":
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(f"{where}: key '{key}' must be an integer >= {low}, got {v!r}")
    if not (cfg.datasets or cfg.base.get("data") or cfg.set.get("data")):
        raise ConfigError(f"{where}: no training data: give 'datasets', or 'data' in the base config or 'set'")
    if "output_dir" in cfg.set:  # a base config's output_dir is simply replaced by runs/<run_id>
        raise ConfigError(
            f"{where}: key 'set' may not hold 'output_dir': each point trains in <output_dir>/runs/<run_id>"
        )
    return cfg
