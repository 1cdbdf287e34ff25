"""`witune tune DATA --model M [--budget B] [--search auto|surface|halving|grid]`: which prompt-loss weight for
this data, in one command. Measures the data (Rg), runs `witune recommend`'s PLW first, searches the PLW grid
within the budget, scores every run on held-out records (response NLL), and prints one answer with its interval,
evidence and the tokens spent against the full grid's; report.html, tune.json and a sweep folder underneath
(`witune sweep status`, `witune analyze` and `witune report` read it). A killed tune continues with --resume."""

from __future__ import annotations

import argparse

from witune.cli.common import add_set_option, int_at_least


def register(sub) -> None:
    from witune.workflows.tune import SEARCHES, TuneConfig

    p = sub.add_parser(
        "tune",
        help="which prompt-loss weight for my data: search within a budget, one answer + report",
        description=__doc__,
        epilog=TuneConfig.keys_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", help="training data (any format witune reads)")
    p.add_argument("--model", default=None, help="model to fine-tune (default: smollm2)")
    p.add_argument("--budget", default=None, help="runs ('4') or training tokens ('250k tokens'); default: 1/3 grid")
    p.add_argument("--search", choices=SEARCHES, default=None, help="search strategy (default: auto)")
    p.add_argument(
        "--eval",
        dest="eval_tasks",
        action="append",
        default=None,
        metavar="TASK",
        help="also run this lm-eval task or witune:<built-in> on every finished run (repeatable)",
    )
    p.add_argument("--heldout", default=None, help="held-out records (default: split off the end of DATA)")
    p.add_argument("--config", dest="base", default=None, help="training config YAML every run starts from")
    add_set_option(p, "training key for every run (repeatable), e.g. --set max_steps=27")
    p.add_argument("--tune-config", default=None, help="a YAML of the keys below (flags win over it)")
    p.add_argument("--out", dest="output_dir", default=None, help="tune folder (default: tune)")
    p.add_argument("--backend", choices=["local", "ray"], default=None, help="local processes or Ray")
    p.add_argument("--workers", type=int_at_least(1), default=None, help="points trained at the same time")
    p.add_argument("--curve-every", type=int_at_least(1), default=None, help="with --search grid: score every N steps")
    p.add_argument("--resume", action="store_true", help="continue a killed tune: nothing finished is retrained")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from witune.flat_config import parse_overrides
    from witune.workflows.tune import TuneConfig, run_tune, write_outputs

    flags = {k: getattr(args, k) for k in ("model", "budget", "search", "eval_tasks", "heldout", "base", "output_dir")}
    flags |= {k: getattr(args, k) for k in ("backend", "workers", "curve_every")}
    given = {k: v for k, v in flags.items() if v is not None}
    given["data"] = args.data
    if args.overrides:
        given["set"] = parse_overrides(args.overrides)
    cfg = TuneConfig.load(args.tune_config, given)
    result = write_outputs(run_tune(cfg, resume=args.resume, progress=not args.no_progress), not args.no_progress)
    console = Console()
    for line in [*result.headline(), *result.notes]:
        console.print(escape(line), highlight=False, soft_wrap=True)
    console.print(f"report: {escape(result.report)}; answer: {escape(str(result.folder))}/tune.json", highlight=False)
    return 0
