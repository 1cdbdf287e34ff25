"""`witune stats DATA --model M`: the PLW paper's Table 1 for any data set (per-field token lengths, total tokens,
Rg), the WIT paper's prompt characteristics, and PNG plots of the length and Rg distributions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from witune.cli.common import (
    add_weight_args,
    escaped,
    input_paths,
    int_at_least,
    output_console,
    print_error,
    role_weights,
)
from witune.data.readers import SUFFIX_LIST


def add_stats_args(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    p.add_argument("data", help=f"data file ({SUFFIX_LIST}) or dataset folder")
    p.add_argument(
        "--model",
        required=model_required,
        default=None if model_required else "smollm2",
        help="tokenizer/model: HF name, local folder, .gguf, or 'smollm2' (offline SmolLM2-135M)",
    )
    p.add_argument("--format", default="auto", help="record format (auto-detected by default)")
    p.add_argument("--skip-bad", action="store_true", help="skip bad records (listed on stderr) instead of stopping")
    p.add_argument("--limit", type=int_at_least(1), default=None, help="use only the first N examples")
    p.add_argument(
        "--max-samples",
        type=int_at_least(1),
        default=1000,
        help="prompts (seeded sample) for n-gram diversity and parse depth",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt sample")


def compute_from_args(args: argparse.Namespace, logprob: bool):
    """Load the data and tokenizer (and the model when ``logprob``) and compute the statistics."""
    from rich.console import Console

    from witune.data import load_examples
    from witune.stats import compute_stats
    from witune.stats.loading import get_model, get_tokenizer

    err = Console(stderr=True)
    on_error = "skip" if args.skip_bad else "raise"
    loaded = load_examples(args.data, format=args.format, on_error=on_error, limit=args.limit)
    for e in loaded.skipped:
        err.print(f"[yellow]skipped:[/] {escaped(e)}", highlight=False, soft_wrap=True)
    tokenizer = get_tokenizer(args.model)
    model = get_model(args.model, args.device) if logprob else None
    rows = None
    if getattr(args, "template", None) is not None:  # `witune stats`: also the rendered rows, as training sees them
        from witune.data import tokenize_examples

        weights = role_weights(args)
        data = tokenize_examples(
            loaded.examples,
            tokenizer,
            weights,
            template=args.template,
            final_turn_only=args.final_turn_only,
            on_error=on_error,
            progress=True,
        )
        for e in data.skipped:
            err.print(f"[yellow]skipped (rendering):[/] {escaped(e)}", highlight=False, soft_wrap=True)
        for line in data.warnings(weights):
            print_error(line, "warning")
        rows = data.rows
    with err.status(f"measuring {len(loaded.examples)} samples"):
        return compute_stats(
            loaded.examples,
            tokenizer,
            source=str(args.data),
            model=model,
            max_samples=args.max_samples,
            logprob_samples=getattr(args, "logprob_samples", 128),
            seed=args.seed,
            progress=True,
            rows=rows,
        )


def register(sub) -> None:
    p = sub.add_parser(
        "stats",
        help="data-set statistics: per-field lengths, Rg, prompt characteristics, plots",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_stats_args(p)
    from witune.data.render import TEMPLATES

    p.add_argument("--template", default="auto", choices=list(TEMPLATES), help="template for the rendered counts")
    p.add_argument("--final-turn-only", action="store_true", help="train only the last assistant turn")
    add_weight_args(p)
    p.add_argument(
        "--logprob-samples",
        type=int_at_least(0),
        default=128,
        help="prompts scored by the model for the average next-token log-prob (0: skip)",
    )
    p.add_argument("--device", default="auto", help="device for the log-prob pass: auto, cpu, cuda")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH", help="write JSON (to PATH or stdout)")
    p.add_argument("--plot", default=None, metavar="DIR", help="write <name>_lengths.png and <name>_rg.png here")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=run)


def stats_tables(stats) -> list:
    """Rich tables: Table 1 row per field and role, Rg, prompt characteristics."""
    from rich.table import Table

    t = Table(title=f"{escaped(stats.source)}: {stats.samples} samples, {stats.total_tokens:,} tokens (no template)")
    for col in ("part", "mean tokens", "std", "total"):
        t.add_column(col, justify="left" if col == "part" else "right")
    for name, s in [
        *stats.fields.items(),
        *((f"role {r}", s) for r, s in stats.roles.items()),
        ("prompt (instruction + input)", stats.prompt),
        ("completion", stats.completion),
    ]:
        t.add_row(name, f"{s.mean:.2f}", f"{s.std:.2f}", f"{s.total:,}")
    r = Table(title="generation ratio Rg = completion tokens / prompt tokens")
    r.add_column("measure")
    r.add_column("value", justify="right")
    r.add_row("Rg, ratio of means (matches the PLW paper's Table 1)", f"{stats.rg.ratio_of_means:.4g}")
    r.add_row("Rg, mean of per-sample ratios (PLW paper Sec. 2.1 wording)", f"{stats.rg.mean_of_ratios:.4g}")
    r.add_row("median per-sample Rg", f"{stats.rg.median:.4g}")
    r.add_row("short-completion samples (Rg < 1)", f"{stats.rg.short_fraction:.1%}")
    r.add_row("data set", stats.rg.kind)
    c = Table(title=f"prompt characteristics (WIT paper), {stats.characteristic_samples} prompts")
    c.add_column("measure")
    c.add_column("value", justify="right")
    c.add_row("average prompt length (tokens)", f"{stats.prompt.mean:.2f}")
    d = stats.ngram_diversity
    c.add_row("n-gram diversity (mean distinct-1..4)", f"{d['mean']:.4f}")
    c.add_row("distinct-1 / 2 / 3 / 4", " / ".join(f"{d[f'distinct_{n}']:.3f}" for n in range(1, 5)))
    depth = stats.parse_depth
    c.add_row(
        "mean dependency-parse depth",
        f"{depth.value:.3f} ({depth.reason})" if depth.value is not None else depth.reason,
    )
    c.add_row(
        "avg next-token log-prob of prompt tokens",
        f"{stats.prompt_logprob:.4f} nats" if stats.prompt_logprob is not None else "not computed (no model)",
    )
    tables = [t, r, c]
    if stats.trained is not None:
        tables.append(trained_table(stats.trained))
    return tables


def trained_table(parts) -> Any:
    """Rendered rows (template included) per role and span: what the loss sees, with the weights given."""
    from rich.table import Table

    t = Table(
        title=f"rendered with the template, {parts.rows} rows: tokens per role and span, as the loss sees them",
        caption=f"Rg of the trained parts: {parts.rg_tokens:.4g} by tokens (response / prompt), "
        f"{parts.rg_weighted:.4g} by weight (sum of response weights / sum of prompt weights); "
        f"{parts.rows_cut} rows with a token boundary cut (witune.data.tokens)",
    )
    for col in ("part", "tokens", "trained (weight != 0)", "weight sum"):
        t.add_column(col, justify="left" if col == "part" else "right")
    for part in sorted(parts.tokens, key=lambda p: (p.startswith("span"), p)):
        t.add_row(part, f"{parts.tokens[part]:,}", f"{parts.trained[part]:,}", f"{parts.weight_sum[part]:,.2f}")
    return t


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from witune.atomic import atomic_write_text, check_output
    from witune.stats.plots import save_plots

    if args.json not in (None, "-"):
        check_output(args.json, input_paths(args), args.force)  # before any work
    if args.plot:
        check_output(args.plot, input_paths(args), what="plot folder", folder=True)
    stats = compute_from_args(args, logprob=args.logprob_samples > 0)
    err = Console(stderr=True)
    if args.plot:
        for path in save_plots(stats, args.plot, Path(args.data).stem):
            err.print(f"wrote {escaped(path)}")
    if args.json is not None:
        text = json.dumps(stats.to_dict(), indent=2)
        if args.json == "-":
            sys.stdout.write(text + "\n")
        else:
            atomic_write_text(args.json, text + "\n")
            err.print(f"wrote {escaped(args.json)}")
        return 0
    console = output_console()
    for table in stats_tables(stats):
        console.print(table)
    return 0
