"""Benchmark: lm-eval log-likelihood requests/s of stock `HFLM` against witune's `WituneLM`, same tasks and items.

One command:  .venv/bin/python bench/bench_eval.py   (options: --tasks witune_piqa:0:40 ... --batch 16 --repeats 2)

Model: SmolLM2-135M-Instruct (offline conversion, `witune.models.smollm2_path`), fp32, CPU. Both LMs are built
once with the same arguments (`witune.eval.harness.make_lm(lm="hf" | "witune")`); each task (a local task
`name:shots:limit`) runs through lm-eval's `simple_evaluate` on the first `limit` items, the variants interleaved
repeat by repeat (bench/method.py). requests/s = log-likelihood requests / seconds spent inside the LM's
`loglikelihood` (tokenisation included; task building, metrics and bootstrap excluded); requests per CPU-second
(this process's CPU time over the same calls) is printed next to it, a figure that other processes on a shared
machine disturb less than wall time; model tokens (the positions the model's layers ran on, padding
included, counted at the input embedding, in the last repeat: the first one includes witune's one-time probe)
do not depend on load at all. The scores of every
run are compared to the first stock run: the script fails if any differs by more than 1e-6 (accuracies are
counts over items, so that means exactly equal; TruthfulQA MC2, a probability mass, moves at 1e-7 with float
rounding of the log-likelihoods) and prints the largest difference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from method import fmt_spread, interleaved, load_cell, load_summary, spread, write_results

DEFAULT_TASKS = [
    "witune_piqa:0:50",
    "witune_arc_challenge:5:20",
    "witune_mmlu_high_school_biology:5:20",
    "witune_winogrande:5:20",
    "witune_truthfulqa_mc2:0:10",
]
VARIANTS = ("hf", "witune")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS, help="local tasks as name:shots:limit")
    p.add_argument("--batch", type=int, default=16, help="batch size of both LMs (the demo's: 16)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--model", default=None, help="model folder (default: the SmolLM2-135M conversion)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "eval_throughput.json"))
    args = p.parse_args()

    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from witune.eval.harness import make_lm, results_to_rows
    from witune.eval.local_tasks import default_data_dir, write_local_tasks
    from witune.models import smollm2_path

    torch.manual_seed(0)
    model = args.model or str(smollm2_path())
    lms = {v: make_lm(model, batch_size=args.batch, lm=v) for v in VARIANTS}
    tasks = [(name, int(shots), int(limit)) for name, shots, limit in (t.split(":") for t in args.tasks)]
    tmp = tempfile.TemporaryDirectory(prefix="witune_tasks_")
    write_local_tasks(tmp.name, default_data_dir())
    manager = TaskManager(include_path=tmp.name, include_defaults=False)
    rows: list[dict] = []
    scores: dict[str, dict] = {}
    for name, shots, limit in tasks:

        def run(variant: str, name: str = name, shots: int = shots, limit: int = limit) -> dict:
            lm = lms[variant]
            spent = [0.0, 0, 0.0, 0]  # seconds, requests, CPU seconds, tokens through the model body
            inner = type(lm).loglikelihood

            def count(module, inputs, output):
                spent[3] += inputs[0].numel()  # every input position the layers run on, padding included

            hook = lm.model.get_input_embeddings().register_forward_hook(count)

            def timed(requests, disable_tqdm: bool = False):
                t0, c0 = time.perf_counter(), time.process_time()
                out = inner(lm, requests, disable_tqdm=True)
                spent[0] += time.perf_counter() - t0
                spent[2] += time.process_time() - c0
                spent[1] += len(requests)
                return out

            lm.loglikelihood = timed  # type: ignore[method-assign]
            try:
                out = simple_evaluate(
                    model=lm,
                    tasks=[name],
                    num_fewshot=shots,
                    limit=limit,
                    task_manager=manager,
                    log_samples=False,
                    bootstrap_iters=0,
                    random_seed=0,
                    numpy_random_seed=0,
                    torch_random_seed=0,
                    fewshot_random_seed=0,
                )
            finally:
                del lm.loglikelihood
                hook.remove()
            got = {f"{r['task']}/{r['metric']}": r["value"] for r in results_to_rows(out)}
            return {
                "seconds": spent[0],
                "cpu_seconds": spent[2],
                "requests": spent[1],
                "requests_per_s": spent[1] / spent[0],
                "requests_per_cpu_s": spent[1] / spent[2],
                "model_tokens": spent[3],
                "scores": got,
            }

        runs = interleaved({v: (lambda v=v: run(v)) for v in VARIANTS}, args.repeats)
        reference = runs["hf"][0]["scores"]
        worst = 0.0
        for v in VARIANTS:
            for r in runs[v]:
                if set(r["scores"]) != set(reference):
                    raise SystemExit(f"{name}: {v} metrics {sorted(r['scores'])} differ from {sorted(reference)}")
                worst = max([worst, *(abs(r["scores"][k] - reference[k]) for k in reference)])
        # Accuracies are counts over items: equal exactly or not at all. A probability mass (TruthfulQA MC2)
        # moves with float rounding of the log-likelihoods (stock HFLM's own batch size moves it alike): it may
        # differ below 1e-6, and the largest difference is printed.
        if worst > 1e-6:
            raise SystemExit(f"{name}: scores differ from stock HFLM's by {worst:.3g}")
        scores[name] = reference
        medians = {v: statistics.median(r["requests_per_s"] for r in runs[v]) for v in VARIANTS}
        cpu = {v: statistics.median(r["requests_per_cpu_s"] for r in runs[v]) for v in VARIANTS}
        for v in VARIANTS:
            rows.append(
                {
                    "task": name,
                    "shots": shots,
                    "items": limit,
                    "variant": v,
                    "requests": runs[v][0]["requests"],
                    "requests_per_s": spread([r["requests_per_s"] for r in runs[v]]),
                    "requests_per_cpu_s": spread([r["requests_per_cpu_s"] for r in runs[v]]),
                    "speedup": medians[v] / medians["hf"],
                    "speedup_cpu": cpu[v] / cpu["hf"],
                    "model_tokens": runs[v][-1]["model_tokens"],
                    "tokens_vs_hf": runs[v][-1]["model_tokens"] / runs["hf"][-1]["model_tokens"],
                    "scores": runs[v][0]["scores"],
                    "max_score_difference": worst,
                    "runs": runs[v],
                    **load_summary(runs[v]),
                }
            )
    tmp.cleanup()
    print(
        "\n| task | shots | items | requests | variant | requests/s (min / median / max) | vs HFLM "
        "| requests per CPU-s (median) | vs HFLM (CPU) | model tokens (vs HFLM) | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['task']} | {r['shots']} | {r['items']} | {r['requests']} | {r['variant']} | "
            f"{fmt_spread(r['requests_per_s'])} | {r['speedup']:.2f}x | {r['requests_per_cpu_s']['median']:.2f} | "
            f"{r['speedup_cpu']:.2f}x | {r['model_tokens']} ({r['tokens_vs_hf']:.2f}) | {load_cell(r)} |"
        )
    print("\nscores of stock HFLM (largest difference of any run of either LM):")
    for name, got in scores.items():
        diff = max(r["max_score_difference"] for r in rows if r["task"] == name)
        print(f"  {name}: " + ", ".join(f"{k.split('/', 1)[1]}={v:.6f}" for k, v in got.items()) + f" ({diff:.1g})")
    write_results(args.out, {"model": model, "batch": args.batch, "repeats": args.repeats}, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
