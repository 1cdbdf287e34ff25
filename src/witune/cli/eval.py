"""`witune eval MODEL --tasks t1,t2 [--limit N] [--num-fewshot K] [--json OUT]`."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from witune.cli.common import input_paths, int_at_least, output_console, print_error

if TYPE_CHECKING:  # a type only
    from witune.eval.rows import MetricRow


def help_tasks() -> str:
    """The --tasks help, its built-ins read from the evaluator registry (a copy left out witune:robustness)."""
    from witune.eval.builtins import builtin_usage

    return (
        "comma-separated: local harness tasks (witune_arc_challenge, witune_piqa, witune_winogrande, "
        "witune_truthfulqa_mc2, witune_mmlu, witune_mmlu_<subject>, witune_bbh, witune_ifeval), standard "
        f"lm-eval names (arc_challenge, ... need the network), or built-ins {builtin_usage()}"
    )


def register(subparsers) -> None:
    from witune.eval.harness import LMS

    p = subparsers.add_parser("eval", help="evaluate a model on benchmarks and built-in metrics", description=__doc__)
    p.add_argument("model", help="model folder (or hub name for standard tasks)")
    p.add_argument("--tasks", required=True, help=help_tasks())
    p.add_argument("--limit", type=int_at_least(1), default=None, help="items per task")
    p.add_argument("--num-fewshot", type=int_at_least(0), default=None, help="override the per-task shot presets")
    p.add_argument("--json", dest="json_out", default=None, help="write the result rows to this JSON file")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-new-tokens", type=int_at_least(1), default=256, help="for generation built-ins")
    p.add_argument("--batch-size", type=int_at_least(1), default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--judge", default=None, help="judge for witune:winrate: model folder or http(s) endpoint")
    p.add_argument("--judge-model", default="judge", help="model name sent to an OpenAI-compatible judge")
    p.add_argument(
        "--judge-allow-http",
        action="store_true",
        help="allow a plain http judge on another machine (default: https, or http to localhost only)",
    )
    p.add_argument(
        "--data-dir", default=None, help="evaluation files (default: $WITUNE_EVAL_DATA or ../shared/data/eval)"
    )
    p.add_argument(
        "--lm",
        choices=LMS,
        default=None,
        help="lm-eval model for harness tasks: witune (default; stock HFLM's ids and scores, log-likelihoods "
        "faster) or hf (lm-eval's stock HFLM); default from $WITUNE_EVAL_LM, else witune",
    )
    p.add_argument("--db", default=None, help="sweep database to write results into (with --run-id)")
    p.add_argument("--run-id", default=None, help="run id in the sweep database")
    p.set_defaults(func=run)


def print_table(rows: list[MetricRow]) -> None:
    from rich.table import Table

    table = Table(title="witune eval")
    for col in ("task", "metric", "value", "stderr"):
        table.add_column(col, justify="right" if col in ("value", "stderr") else "left")
    for r in rows:
        arrow = "↑" if r["higher_is_better"] else "↓"
        se = "" if r["stderr"] is None else f"{r['stderr']:.4f}"
        table.add_row(r["task"], f"{r['metric']} {arrow}", f"{r['value']:.4f}", se)
    output_console().print(table)


def run(args: argparse.Namespace) -> int:
    from witune.errors import ConfigError, DataError
    from witune.eval import EvalOptions, evaluate, parse_task, split_tasks
    from witune.eval.runner import task_problems

    if (args.db is None) != (args.run_id is None):
        print_error("witune eval: --db and --run-id go together")
        return 2
    from witune.atomic import atomic_write_text, check_output

    opts = EvalOptions(
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        judge=args.judge,
        judge_model=args.judge_model,
        judge_allow_http=args.judge_allow_http,
    )
    try:
        names = split_tasks(args.tasks)
        if args.json_out:  # before the evaluation, not after it: never into the model, an eval file or the db
            files = [n.partition("=")[2] for n in names if n.startswith("witune:") and "=" in n]
            check_output(args.json_out, input_paths(args, *files), args.force)
        if args.db:  # a corrupt database is found now, not after the whole evaluation ran
            from witune.sweep.db import check_run

            check_run(args.db, args.run_id)
        if args.judge and args.judge.startswith(("http://", "https://")):  # refuse an insecure judge before work
            from witune.eval.judge import check_judge_url

            check_judge_url(args.judge, args.judge_allow_http)
        for n in names:  # fail on a typo before loading anything
            if n.startswith("witune:"):
                parse_task(n)
        if problems := task_problems(names, args.data_dir):  # as a sweep's preflight: unknown or empty tasks
            raise ConfigError("; ".join(problems))
        rows = evaluate(
            args.model,
            names,
            limit=args.limit,
            num_fewshot=args.num_fewshot,
            options=opts,
            device=args.device,
            data_dir=args.data_dir,
            lm=args.lm,
        )
    except (DataError, ConfigError, ValueError, FileNotFoundError, ImportError, RuntimeError, OSError) as e:
        print_error(f"witune eval: {e}")
        return 2
    print_table(rows)
    if args.json_out:
        atomic_write_text(args.json_out, json.dumps({"model": args.model, "results": rows}, indent=2) + "\n")
    if args.db:
        from witune.sweep.db import write_eval_rows  # owned by the sweep; see witune.sweep

        write_eval_rows(args.db, args.run_id, rows)
    return 0
