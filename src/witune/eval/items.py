"""One harness task with its per-item results: the rows `evaluate` gives plus each item's 0/1 accuracy (lm-eval's
logged samples, in item order), for paired comparisons of two models on the same items (`witune demo`)."""

from __future__ import annotations

import tempfile

from witune.eval.harness import make_lm, results_to_rows
from witune.eval.local_tasks import write_local_tasks
from witune.eval.rows import MetricRow


def harness_items(
    model_path: str, task: str, limit: int | None, data_dir: str, num_fewshot: int = 0
) -> tuple[list[MetricRow], list[float]]:
    """The harness rows of one local task (`witune_piqa`, ...) and each item's accuracy, by doc_id."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="witune_tasks_") as tmp:
        write_local_tasks(tmp, data_dir)
        out = simple_evaluate(
            model=make_lm(model_path, batch_size=16),
            tasks=[task],
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=TaskManager(include_path=tmp, include_defaults=False),
            log_samples=True,
            bootstrap_iters=0,
            random_seed=0,
            numpy_random_seed=0,
            torch_random_seed=0,
        )
    samples = sorted(out["samples"][task], key=lambda d: d["doc_id"])
    return results_to_rows(out), [float(d["acc"]) for d in samples]
