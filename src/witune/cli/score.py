"""`witune score DATA --model M --prompt-weight a --response-weight b`: a model's weighted loss on data,
with prompt and response NLL sums, token counts and the normaliser (per-role perplexity)."""

from __future__ import annotations

import argparse
import json

from witune.cli.common import (
    add_data_args,
    add_model_arg,
    add_weight_args,
    escaped,
    input_paths,
    int_at_least,
    load_rows,
    normalization_arg,
    output_console,
    role_weights,
)


def register(sub) -> None:
    p = sub.add_parser(
        "score",
        help="weighted loss and per-role NLL of a model on a data set, without training",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_data_args(p)
    add_model_arg(p)
    add_weight_args(p)
    p.add_argument(
        "--normalization",
        type=normalization_arg,
        default="nonzero",
        help="nonzero (WIT), weight_sum, tokens, or a number",
    )
    p.add_argument(
        "--dynamic-weight",
        default="none",
        help="dynamic token weight in the loss, as `witune train` takes it: none, dft (times the detached p), or a "
        "rule of your own as 'package.module:Class'",
    )
    p.add_argument("--batch-size", type=int_at_least(1), default=8)
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH", help="write the result as JSON")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from witune.atomic import atomic_write_text, check_output
    from witune.eval.score import score
    from witune.loss import dynamic_weight
    from witune.models import load_model, load_tokenizer

    dynamic = dynamic_weight(args.dynamic_weight)  # a ConfigError names the valid values

    if args.json not in (None, "-"):
        check_output(args.json, input_paths(args), args.force)  # before any work
    weights = role_weights(args)
    tokenizer = load_tokenizer(args.model)
    data = load_rows(args, tokenizer, weights)
    model = load_model(args.model)
    result = score(
        model, data.rows, tokenizer.pad_token_id, args.normalization, args.batch_size, dynamic=dynamic
    ).as_dict()
    if args.json is not None:
        text = json.dumps(result, indent=2)
        if args.json == "-":
            print(text)
        else:
            atomic_write_text(args.json, text + "\n")
        return 0
    table = Table(
        title=f"{escaped(args.model)} on {escaped(args.data)} (prompt {weights.prompt:g}, response {weights.response:g})"
    )
    for col in ("", "NLL sum", "tokens", "NLL / token", "perplexity"):
        table.add_column(col, justify="right")
    for role in ("prompt", "response"):
        table.add_row(
            role,
            f"{result[f'{role}_nll']:.2f}",
            str(result[f"{role}_tokens"]),
            f"{result[f'{role}_nll_per_token']:.4f}",
            f"{result[f'{role}_perplexity']:.2f}",
        )
    output_console().print(table)
    output_console().print(
        f"weighted loss [bold]{result['loss']:.4f}[/] = {result['weighted_sum']:.2f} / "
        f"{result['normalizer']:.1f} ({result['normalization']} normaliser, {result['samples']} samples"
        + (f", dynamic weight {result['dynamic_weight']})" if dynamic is not None else ")")
    )
    return 0
