"""Expand a SweepConfig into points: one fully resolved training config each, with a stable id.

The id is a hash of the point's resolved training config (minus the keys that do not change what is trained:
output folder, progress bar, trackers), so expanding the same sweep again gives the same ids, and `--resume`
finds the points it already ran whatever the order of the axes or the current folder.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

from witune.data.errors import ConfigError
from witune.data.readers import DATA_SUFFIXES
from witune.data.weights import weight_pair
from witune.loss.normalization import normalization_label
from witune.results_schema import Labels
from witune.sweep.config import SweepConfig
from witune.sweep.point import RUN_FOLDER, Point, dpo_stage
from witune.train.config import load_config

# Keys that do not change the trained weights: left out of the id.
# allow_weight_above_one only permits a value; the weights themselves are hashed, so ids stay as they were.
_NOT_HASHED = {
    "output_dir",
    "progress",
    "report_to",
    "log_every",
    "save_every",
    "save_total_limit",
    "allow_weight_above_one",
    "stop_at_step",  # a rung of successive halving stops the same training part-way: the same point
}


_HASHED_WHEN_SET = ("dynamic_weight_args",)


def _absolute_if_exists(value: str) -> str:
    """Existing local paths become absolute (the id and the workers then do not depend on the current folder);
    hub names, aliases ('smollm2') and missing files stay as written (a missing file fails its point only)."""
    p = Path(value).expanduser()
    return str(p.resolve()) if p.exists() else value


def point_id(train: dict[str, Any]) -> str:
    hashed = {k: v for k, v in sorted(train.items()) if k not in _NOT_HASHED}
    for key in _HASHED_WHEN_SET:  # keys added after sweeps existed: at their default they leave the ids as they were
        if not hashed.get(key):
            hashed.pop(key, None)
    if "normalization" in hashed:  # as text, the way sweeps before the parsed type hashed it: ids stay
        hashed["normalization"] = normalization_label(hashed["normalization"])
    return hashlib.sha256(json.dumps(hashed, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _label(value: str) -> str:
    """A short name for tables: a file's stem or a folder's name; hub names and aliases as they are."""
    p = Path(value)
    if p.suffix in DATA_SUFFIXES or p.suffix == ".gguf":
        return p.stem
    return p.name if (p.is_absolute() or p.exists()) else value


def expand(cfg: SweepConfig) -> list[Point]:
    """The points of the grid: the product of models x datasets x weights x normalisations x seeds."""
    base = {k: v for k, v in cfg.base.items() if k != "output_dir"}
    common = {**base, **cfg.set}
    if cfg.allow_weight_above_one:
        common["allow_weight_above_one"] = True
    axes: list[list[dict[str, Any]]] = [
        [{"model": _absolute_if_exists(m)} for m in cfg.models] or [{}],
        [{"data": _absolute_if_exists(d)} for d in cfg.datasets] or [{}],
        [{"plw": None, "prompt_weight": p, "response_weight": r} for p, r in cfg.weight_pairs()] or [{}],
        [{"normalization": n} for n in cfg.normalization] or [{}],
        [{"seed": s} for s in cfg.seeds] or [{}],
        *([{_AXIS: (key, v)} for v in values] for key, values in cfg.weight_axes.items()),
    ]
    if "data" in common and not cfg.datasets:
        common["data"] = _absolute_if_exists(str(common["data"]))
    if "model" in common and not cfg.models:
        common["model"] = _absolute_if_exists(str(common["model"]))
    evals = cfg.eval_spec()
    dpo = _dpo_keys(cfg)
    points, seen = [], set()
    for combo in itertools.product(*axes):
        overrides = dict(common)
        variant = []
        for part in combo:
            if _AXIS in part:
                key, value = part[_AXIS]
                _set_weight(overrides, key, value)
                variant.append(f"{key}={value}")
            else:
                overrides.update(part)
        try:
            resolved = load_config(None, {**overrides, "output_dir": RUN_FOLDER})  # validates every key and type
        except ConfigError as e:
            raise ConfigError(f"sweep training config (base + set + axes): {e}") from None
        point = Point("", resolved, Labels(), evals, dpo_stage(dpo, resolved.seed) if dpo else None)
        train = point.train_keys()
        # A DPO stage is part of what the point computes; SFT-only points keep their ids.
        point.run_id = point_id({**train, "_dpo": dpo}) if dpo else point_id(train)
        if point.run_id in seen:  # two axis values that resolve to the same training (e.g. plw 1 and weights [1, 1])
            continue
        seen.add(point.run_id)
        prompt, response = weight_pair(resolved.prompt_weight, resolved.response_weight, resolved.plw)
        point.labels = Labels(
            _label(resolved.model),
            _label(resolved.data),
            prompt,
            response,
            normalization_label(resolved.normalization),
            resolved.seed,
            ", ".join(variant),
        )
        points.append(point)
    return points


_AXIS = "_weight_axis"  # marks a `weight_axes` value among the axis parts of a grid combination


def _set_weight(overrides: dict[str, Any], key: str, value: Any) -> None:
    """`span_weights.think` = 0.5 sets one entry of the span_weights mapping (the others stay as base/set give
    them); `dynamic_weight` is a plain key."""
    head, _, name = key.partition(".")
    if name:
        overrides[head] = {**(overrides.get(head) or {}), name: value}
    else:
        overrides[key] = value


def _dpo_keys(cfg: SweepConfig) -> dict[str, Any]:
    """The sweep's `dpo:` keys, checked now (every point gets its model and output_dir later)."""
    if not cfg.dpo:
        return {}
    fixed = [k for k in ("model", "output_dir") if k in cfg.dpo]
    if fixed:
        raise ConfigError(
            f"sweep key 'dpo' may not hold {fixed}: DPO starts from each point's SFT model and "
            "writes to <output_dir>/runs/<run_id>/dpo"
        )
    keys = dict(cfg.dpo)
    if "data" in keys:
        keys["data"] = _absolute_if_exists(str(keys["data"]))
    try:
        dpo_stage(keys, 0)
    except ConfigError as e:
        raise ConfigError(f"sweep key 'dpo': {e}") from None
    return keys
