"""`witune recommend DATA`: one (lambda_p, lambda_r) pair for a data set and its PLW equivalent, with one reason
and source per number (PLW paper Table 4, continuous in Rg; WIT paper shares; witune's own midpoint, labelled).
With `--from SWEEP` (a sweep folder or results CSV of your own), your fit's shape and interval replace the papers'
numbers, and only your sweep's reasons are given."""

from __future__ import annotations

import argparse
import json
import math
import sys

from witune.cli.common import escaped, int_at_least, output_console
from witune.cli.stats import add_stats_args, compute_from_args


def register(sub) -> None:
    p = sub.add_parser(
        "recommend",
        help="recommend prompt/response loss weights for a data set, with sources",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_stats_args(p, model_required=False)
    p.add_argument(
        "--benchmarks",
        default="all",
        choices=["all", "mc", "gen"],
        help="Table 4 column: all benchmarks, multiple-choice, or generation",
    )
    p.add_argument(
        "--logprob-samples",
        type=int_at_least(0),
        default=0,
        help="also score this many prompts with the model (WIT's log-prob characteristic)",
    )
    p.add_argument("--device", default="auto", help="device for the log-prob pass")
    p.add_argument(
        "--from",
        dest="sweep",
        default=None,
        metavar="SWEEP",
        help="your sweep folder (or results CSV): its fitted optimum replaces the papers' numbers",
    )
    p.add_argument(
        "--sweep-dataset",
        default=None,
        help="which dataset of the sweep is DATA (its label, the file stem); needed when it has several",
    )
    p.add_argument(
        "--n-boot",
        type=int_at_least(0),
        default=0,
        help="parametric bootstrap replicates of the sweep's critical PLW, shown beside Fieller's interval",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from witune.stats import recommend

    stats = compute_from_args(args, logprob=args.logprob_samples > 0)
    sweep = None
    if args.sweep:
        from pathlib import Path

        from witune.analysis.optimum import sweep_optimum
        from witune.workflows import read_results_table

        table = read_results_table(args.sweep)
        name = args.sweep_dataset
        if name is None:  # DATA's own label in a sweep is its file stem (witune.sweep.grid)
            labels = set(table["dataset"].dropna())
            name = Path(args.data).stem if Path(args.data).stem in labels else None
        sweep = sweep_optimum(table, name, n_boot=args.n_boot, path=args.sweep)
    rec = recommend(
        stats.rg.ratio_of_means,
        args.benchmarks,
        prompt_tokens=stats.prompt.mean,
        ngram_diversity=stats.ngram_diversity["mean"],
        prompt_logprob=stats.prompt_logprob,
        sweep=sweep,
    )
    if args.json:
        out = {"data": args.data, "rg_mean_of_ratios": stats.rg.mean_of_ratios, **rec.to_dict()}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return 0
    console = output_console()
    t = Table(
        title=f"{escaped(args.data)}: Rg {rec.rg:.3g} ({rec.kind}; ratio of means, tokenizer "
        f"{escaped(args.model)}); benchmarks {rec.column!r}; from {escaped(str(rec.source))}"
    )
    t.add_column("setting")
    t.add_column("recommended", justify="right")
    t.add_column("interval / range to sweep", justify="right")
    t.add_row("lambda_p (prompt weight)", f"{rec.lambda_p:g}", f"{rec.lambda_p_range[0]}-{rec.lambda_p_range[1]}")
    t.add_row("lambda_r (response weight)", f"{rec.lambda_r:g}", f"{rec.lambda_r_range[0]}-{rec.lambda_r_range[1]}")
    interval = (
        f"{rec.plw_interval[0]:.3g}-{rec.plw_interval[1]:.3g} (95%, {rec.interval_method})"
        if rec.plw_interval
        else "0.01-0.5"
    )
    plw = f"{rec.plw:g}" if math.isfinite(rec.plw) else "-"
    t.add_row("PLW = lambda_p / lambda_r (response weight 1)", plw, escape(interval))
    console.print(t)
    r = Table(title="one reason per number, then context", show_lines=False)
    r.add_column("about")
    r.add_column("reason")
    r.add_column("source")
    for reason in rec.reasons:
        r.add_row(reason.about, escape(reason.text), escape(reason.source))
    console.print(r)
    return 0
