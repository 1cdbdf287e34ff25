"""`evaluate(model_path, tasks)`: one entry point for harness tasks and witune's built-ins.

Returns rows {task, metric, value, stderr, higher_is_better}; the CLI prints them, the sweep stores them.
"""

from __future__ import annotations

from collections.abc import Sequence

from witune.eval.builtins import BUILTINS, FILE_ARGUMENT, EvalOptions
from witune.eval.rows import MetricRow

PREFIX = "witune:"


def parse_task(name: str) -> tuple[str, str | None]:
    """`witune:memorization=data.json` -> ("memorization", "data.json"); checks the built-in exists."""
    body = name[len(PREFIX) :]
    key, _, arg = body.partition("=")
    if key not in BUILTINS:
        raise ValueError(
            f"unknown built-in evaluation {name!r}; choose from " + ", ".join(PREFIX + k for k in BUILTINS)
        )
    return key, (arg or None)


def split_tasks(tasks: str | Sequence[str]) -> list[str]:
    """Accept "a,b" or ["a", "b"]; strips blanks and rejects an empty list."""
    items = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    names = [t.strip() for t in items if t.strip()]
    if not names:
        raise ValueError("no tasks given")
    return names


def task_problems(tasks: Sequence[str], data_dir: str | None = None) -> list[str]:
    """What is wrong with evaluation task names, found without loading a model: unknown built-ins, a
    built-in's missing data file, local `witune_*` tasks the data folder does not have, names lm-eval does not
    know (its task index is read only when a standard name is asked for: it takes ~20 s)."""
    import tempfile
    from pathlib import Path

    problems = []
    for name in (t for t in tasks if t.startswith(PREFIX)):
        try:
            key, arg = parse_task(name)
        except ValueError as e:
            problems.append(str(e))
            continue
        if arg and key in FILE_ARGUMENT and not Path(arg).expanduser().exists():
            problems.append(f"evaluation {name!r}: file not found: {arg}")
    local = [t for t in tasks if t.startswith("witune_")]
    if local:
        from witune.eval.local_tasks import empty_task_problems, write_local_tasks

        with tempfile.TemporaryDirectory(prefix="witune_tasks_") as tmp:
            try:
                available = set(write_local_tasks(tmp, data_dir))
            except FileNotFoundError as e:  # the folder itself is missing: one problem, not one per task
                problems.append(str(e))
            else:  # an existing folder without the benchmark is no excuse to pass a name
                problems += [f"unknown local evaluation task {t!r}" for t in local if t not in available]
                problems += empty_task_problems(tmp, [t for t in local if t in available])
    standard = [t for t in tasks if not t.startswith((PREFIX, "witune_"))]
    if standard:
        from witune.eval.harness import _require_lm_eval

        _require_lm_eval()
        from lm_eval.tasks import TaskManager

        known = set(TaskManager().all_tasks)
        problems += [f"lm-eval has no task or group {t!r}" for t in standard if t not in known]
    return problems


def evaluate(
    model_path: str,
    tasks: str | Sequence[str],
    limit: int | None = None,
    num_fewshot: int | None = None,
    options: EvalOptions | None = None,
    device: str = "cpu",
    data_dir: str | None = None,
    lm: str | None = None,
) -> list[MetricRow]:
    """Run every task on the model at `model_path` and return all metric rows.

    Harness tasks (local `witune_*` names and standard names) run in one harness session; built-ins
    (`witune:<name>[=ARG]`) load the model once through transformers. `lm` is the lm-eval model for harness
    tasks (`witune.eval.harness.make_lm`: "witune" or "hf"; None: $WITUNE_EVAL_LM, else "witune").
    """
    names = split_tasks(tasks)
    opt = options or EvalOptions()
    if limit is not None:
        opt.limit = limit
    builtin = [(n, *parse_task(n)) for n in names if n.startswith(PREFIX)]  # validate before any work
    harness = [n for n in names if not n.startswith(PREFIX)]
    rows: list[MetricRow] = []
    if harness:
        from witune.eval.harness import run_harness

        rows += run_harness(
            model_path,
            harness,
            limit=limit,
            num_fewshot=num_fewshot,
            data_dir=data_dir,
            device=device,
            seed=opt.seed,
            lm=lm,
        )
    if builtin:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_path))
        # transformers types PreTrainedModel.to as functools.wraps(nn.Module.to): its stub wants `self` first
        model = AutoModelForCausalLM.from_pretrained(str(model_path)).to(device).eval()  # type: ignore[arg-type]
        for full, key, arg in builtin:
            for row in BUILTINS[key](model, tok, arg, opt):
                rows.append({**row, "task": full})  # keep the argument in the name: one row per data file
    return rows
