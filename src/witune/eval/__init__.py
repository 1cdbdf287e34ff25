"""Evaluation: lm-evaluation-harness on local files, built-in generation metrics, pairwise LLM judge.

`evaluate(model_path, tasks, limit=None)` returns rows {task, metric, value, stderr, higher_is_better}.
"""

from witune.eval.builtins import BUILTINS, EvalOptions, declared_diagnostics, register_evaluator
from witune.eval.runner import evaluate, parse_task, split_tasks

__all__ = [
    "BUILTINS",
    "EvalOptions",
    "declared_diagnostics",
    "evaluate",
    "parse_task",
    "register_evaluator",
    "split_tasks",
]
