"""`witune demo`: fine-tune SmolLM2-135M offline on a small instruction set, conventionally (prompt weight 0)
and weighted (prompt weight 0.1); the headline compares them on held-out response NLL and PIQA accuracy with
paired standard errors (prompt NLL is shown only as a diagnostic: the weighted run was trained to lower it)."""

from __future__ import annotations

import argparse
import math
import sys

from witune.cli.common import int_at_least, output_console, positive_float


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="offline demo: fine-tune SmolLM2-135M at a conventional and a weighted setting",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_arguments(p)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dir", default="runs/demo", help="where models, metrics and the plot go")
    p.add_argument("--model", default="smollm2", help="model to fine-tune (HF name, folder, .gguf, or 'smollm2')")
    p.add_argument(
        "--data", default=None, help="instruction file (default: shared alpaca_seed_tasks.jsonl, else generated)"
    )
    p.add_argument("--n-train", type=int_at_least(1), default=64, help="training records (one epoch)")
    p.add_argument(
        "--n-eval",
        type=int_at_least(1),
        default=40,
        help="held-out records scored after training (response NLL with a paired SE)",
    )
    p.add_argument("--max-length", type=int_at_least(2), default=160, help="tokens per sample")
    p.add_argument("--batch-size", type=int_at_least(1), default=2, help="samples per optimizer step")
    p.add_argument("--learning-rate", type=positive_float, default=1e-4)
    p.add_argument(
        "--benchmark",
        default="witune_piqa",
        help="harness task run 0-shot on every model when ../shared/data/eval is present ('' to skip)",
    )
    p.add_argument(
        "--benchmark-limit",
        type=int_at_least(1),
        default=200,
        help="items of the benchmark (paired SE of a difference ~0.02 at 200 items)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from witune.workflows.demo import run_demo, summary_rows

    console = output_console()
    console.print(
        f"[bold]witune demo[/]: {args.model}, conventional (λp=0) vs weighted (λp=0.1), output in {args.output_dir}"
    )
    result = run_demo(
        args.output_dir,
        model=args.model,
        data=args.data,
        n_train=args.n_train,
        n_eval=args.n_eval,
        max_length=args.max_length,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        benchmark=args.benchmark or None,
        benchmark_limit=args.benchmark_limit,
    )
    table = Table(
        title=f"held-out NLL per token on {result.n_eval} records ({result.data_kind} data: {result.data})"
        + (", benchmark 0-shot" if result.benchmarks else "")
    )
    rows = summary_rows(result)
    for col in rows[0]:
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(*(_cell(col, v) for col, v in r.items()))
    console.print(table)
    if result.headline:
        console.print("[bold]Headline[/] (weighted minus conventional, paired standard errors):")
        for line in result.headline:
            console.print(f"  - {line}")
    for s in result.settings:
        console.print(f"{s.name}: model {s.model_dir}, metrics {s.metrics_path}")
    console.print(f"loss plot: {result.plot}\nsummary: {result.output_dir}/demo_summary.json")
    if result.report:
        console.print(f"report: {result.report}")
    console.print(f"total time: {result.seconds:.0f} s")
    return 0


def _cell(col: str, v: object) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.0f}" if col == "seconds" else f"{v:.4f}"
    return str(v)


if __name__ == "__main__":  # `python -m witune.cli.demo`: what `accelerate launch -m` and torchrun start
    from witune.cli.main import main

    sys.exit(main(["demo", *sys.argv[1:]]))
