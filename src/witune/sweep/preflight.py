"""Every name a sweep uses, checked before its first point trains (and by `--dry-run`): a missing dataset or
model folder, a missing DPO data file or an unknown evaluation task would otherwise fail every point, each
after its training, or fail the evaluation of all of them at the end."""

from __future__ import annotations

from pathlib import Path

from witune.data.readers import DATA_SUFFIXES
from witune.errors import ConfigError
from witune.sweep.config import SweepConfig
from witune.sweep.point import Point

# A value written as a path: a hub name ("org/name") or an alias ("smollm2") is not checked here.
_FILE_SUFFIXES = DATA_SUFFIXES | {".gguf"}


def _looks_local(value: str) -> bool:
    return value.startswith(("/", ".", "~")) or Path(value).suffix in _FILE_SUFFIXES


def _missing(kind: str, values: set[str]) -> list[str]:
    return [f"{kind} not found: {v}" for v in sorted(values) if _looks_local(v) and not Path(v).expanduser().exists()]


def check_names(cfg: SweepConfig, points: list[Point]) -> None:
    """One line listing every problem; nothing when all names resolve."""
    from witune.eval.runner import task_problems

    problems = _missing("dataset", {p.train.data for p in points})
    problems += _missing("model", {p.train.model for p in points})
    problems += _missing("tokenizer", {p.train.tokenizer for p in points if p.train.tokenizer})
    problems += _missing("DPO data file", {p.dpo.data for p in points if p.dpo is not None})
    problems += task_problems(list(cfg.eval_tasks), cfg.eval_data_dir)
    problems += _heldout_problems(cfg)
    if problems:
        raise ConfigError(f"sweep {cfg.output_dir}: " + "; ".join(problems) + " (nothing was trained)")


def _heldout_problems(cfg: SweepConfig) -> list[str]:
    """Successive halving's held-out records, read as every rung will read them: a folder or an empty file
    would otherwise fail every point after its first rung's training."""
    if cfg.search != "halving" or not cfg.halving_heldout:
        return []
    from witune.data import load_examples
    from witune.errors import DataError

    try:
        load_examples(Path(cfg.halving_heldout).expanduser(), limit=cfg.halving_heldout_limit)
    except (DataError, ConfigError, OSError) as e:
        return [f"halving_heldout: {e}"]
    return []
