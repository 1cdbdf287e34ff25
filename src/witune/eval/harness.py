"""Run lm-evaluation-harness on standard task names and on witune's local task YAMLs.

Local names (`witune_arc_challenge`, `witune_mmlu_<subject>`, `witune_mmlu`, ...) come from YAMLs written into a
temporary folder by `witune.eval.local_tasks` and run offline. Any other name goes to the harness's own task
registry unchanged (needs the network for its datasets). Few-shot counts come from the presets (the task YAML
for local tasks, `STANDARD_SHOTS` for standard ones) unless `num_fewshot` overrides them all.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from witune.eval.local_tasks import STANDARD_SHOTS, empty_task_problems, generation_problems, write_local_tasks
from witune.eval.rows import MetricRow


def _require_lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('lm-evaluation-harness is not installed: pip install "witune[eval]"') from e


# Which lm-eval model evaluates: "witune" (`witune.eval.fast_lm.WituneLM`: the same ids and scores as stock
# HFLM, log-likelihoods faster) or "hf" (lm-eval's stock HFLM). $WITUNE_EVAL_LM sets the default for every
# caller (the demo, sweeps, `witune eval`); an explicit `lm=` argument or `witune eval --lm` wins.
LMS = ("witune", "hf")


def default_lm() -> str:
    name = os.environ.get("WITUNE_EVAL_LM", "witune")
    if name not in LMS:
        raise ValueError(f"WITUNE_EVAL_LM={name!r}: choose one of {', '.join(LMS)}")
    return name


def make_lm(
    model_path: str,
    device: str = "cpu",
    batch_size: int = 4,
    dtype: str = "float32",
    lm: str | None = None,
    **kwargs: Any,
):
    """An lm-eval model for a local folder (or hub name); build it once and reuse it across task groups.

    `lm` is "witune" (default, `WituneLM`) or "hf" (stock `HFLM`); None reads $WITUNE_EVAL_LM."""
    _require_lm_eval()
    name = lm if lm is not None else default_lm()
    if name not in LMS:
        raise ValueError(f"lm={name!r}: choose one of {', '.join(LMS)}")
    if name == "hf":
        from lm_eval.models.huggingface import HFLM as cls
    else:
        from witune.eval.fast_lm import WituneLM as cls
    return cls(pretrained=str(model_path), device=device, batch_size=batch_size, dtype=dtype, **kwargs)


def results_to_rows(results: dict, weight_by_size: dict[str, bool] | None = None) -> list[MetricRow]:
    """Flatten `simple_evaluate` output into rows {task, metric, value, stderr, higher_is_better}.

    The harness keys metrics as "<metric>,<filter>"; the default filter "none" is dropped from the name.
    lm-eval's group structure rides along where the results have it (witune.analysis.groups reads it): `parent`
    (the task's group, from `group_subtasks`), `n_items` (items scored) and, on a group's rows, `weight_by_size`.
    """
    rows: list[MetricRow] = []
    hib = results.get("higher_is_better", {})
    structure = _structure(results, weight_by_size or {})
    for task, metrics in results.get("results", {}).items():
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            stderr = float(stderr) if isinstance(stderr, (int, float)) and not math.isnan(stderr) else None
            rows.append(
                {
                    "task": task,
                    "metric": metric if filt == "none" else f"{metric} ({filt})",
                    "value": float(value),
                    "stderr": stderr,
                    "higher_is_better": bool(hib.get(task, {}).get(metric, True)),
                    **structure.get(task, {}),  # type: ignore[typeddict-item]
                }
            )
    return rows


def _structure(results: dict, weight_by_size: dict[str, bool]) -> dict[str, dict[str, Any]]:
    """Per task: its parent group, its item count and (groups) lm-eval's `weight_by_size`."""
    out: dict[str, dict[str, Any]] = {}
    for group, children in (results.get("group_subtasks") or {}).items():
        for child in children:
            out.setdefault(child, {})["parent"] = group
    counts = results.get("n-samples") or {}
    for task, metrics in (results.get("results") or {}).items():
        n = (counts.get(task) or {}).get("effective", metrics.get("sample_len"))
        if isinstance(n, int) and not isinstance(n, bool):
            out.setdefault(task, {})["n_items"] = n
        if task in weight_by_size:
            out.setdefault(task, {})["weight_by_size"] = weight_by_size[task]
    return out


def group_weighting(manager: Any, groups: Sequence[str]) -> dict[str, bool]:
    """lm-eval's `weight_by_size` of each group, read from its group config through lm-eval's own loader;
    a group it cannot read is left out (the analysis then says how it combined the subtasks)."""
    out: dict[str, bool] = {}
    try:
        from lm_eval.config.group import GroupConfig
        from lm_eval.tasks._yaml_loader import load_yaml
    except ImportError:  # pragma: no cover - older or newer lm-eval layouts
        return out
    fields = set(GroupConfig.__dataclass_fields__)
    for name in groups:
        try:
            entry = manager.task_index[name]
            raw = entry.cfg or load_yaml(entry.yaml_path, resolve_func=False)
            cfg = GroupConfig(**{k: v for k, v in raw.items() if k in fields} | {"group": name})
            if cfg.aggregate_metric_list:
                out[name] = all(bool(a.weight_by_size) for a in cfg.aggregate_metric_list)
        except Exception:  # noqa: BLE001 - any layout lm-eval does not document: unknown, not fatal
            continue
    return out


def run_harness(
    model: str | Any,
    tasks: Sequence[str],
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    data_dir: str | None = None,
    batch_size: int = 4,
    device: str = "cpu",
    seed: int = 0,
    lm: str | None = None,
) -> list[MetricRow]:
    """Evaluate `model` (a local folder / hub name, or an lm-eval model) on harness tasks; return metric rows.

    `lm` chooses the lm-eval model built for a folder (`make_lm`: "witune" or "hf"; None: $WITUNE_EVAL_LM)."""
    _require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    rows: list[MetricRow] = []
    with tempfile.TemporaryDirectory(prefix="witune_tasks_") as tmp:
        local = [t for t in tasks if t.startswith("witune_")]
        if local:  # validated before the model is loaded
            available = set(write_local_tasks(tmp, data_dir))
            missing = [t for t in local if t not in available]
            if missing:
                raise ValueError(f"unknown local task(s) {missing}; e.g. {sorted(available)[:6]} ...")
            if problems := empty_task_problems(tmp, local):
                raise ValueError("; ".join(problems))
        built = make_lm(model, device=device, batch_size=batch_size, lm=lm) if isinstance(model, str) else model
        context = getattr(built, "max_length", None)
        if local and isinstance(context, int) and (problems := generation_problems(tmp, local, context)):
            raise ValueError("; ".join(problems))
        # Indexing lm-eval's thousands of built-in task YAMLs takes about a minute on a small CPU: skip it when
        # every task is one of our local ones.
        manager = TaskManager(include_path=tmp if local else None, include_defaults=len(local) < len(tasks))
        # One simple_evaluate call per distinct preset, all on the same loaded model.
        groups: dict[int | None, list[str]] = {}
        for t in tasks:
            shots = num_fewshot if num_fewshot is not None else (None if t in local else STANDARD_SHOTS.get(t))
            groups.setdefault(shots, []).append(t)
        for shots, names in groups.items():
            out = simple_evaluate(
                model=built,
                tasks=list(names),
                num_fewshot=shots,
                limit=limit,
                task_manager=manager,
                log_samples=False,
                bootstrap_iters=1000,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
            )
            if out is None:  # non-zero ranks in distributed runs
                continue
            rows.extend(results_to_rows(out, group_weighting(manager, list(out.get("group_subtasks") or {}))))
    return rows
