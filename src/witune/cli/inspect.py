"""`witune inspect DATA --model M`: each sample's tokens coloured by loss weight, or their weights as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from witune.cli.common import (
    add_data_args,
    add_model_arg,
    add_weight_args,
    escaped,
    input_paths,
    int_at_least,
    load_rows,
    output_console,
    role_weights,
)


def register(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="show each sample's tokens coloured by their loss weight",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_data_args(p)
    add_model_arg(p)
    add_weight_args(p)
    p.add_argument("--show", type=int_at_least(0), default=3, help="how many samples to print coloured")
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="write input_ids, weights and roles of every sample as JSON Lines (to PATH, or stdout)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.panel import Panel

    from witune.atomic import atomic_open, check_output
    from witune.data.view import colored_tokens, legend, row_json
    from witune.models import load_tokenizer

    if args.json not in (None, "-"):
        check_output(args.json, input_paths(args), args.force)  # before any work
    weights = role_weights(args)
    tokenizer = load_tokenizer(args.model)
    data = load_rows(args, tokenizer, weights)
    if args.json is not None:
        if args.json == "-":
            for row in data.rows:
                sys.stdout.write(json.dumps(row_json(row)) + "\n")
            return 0
        with atomic_open(args.json, "w") as out:
            for row in data.rows:
                out.write(json.dumps(row_json(row)) + "\n")
        Console(stderr=True).print(f"wrote {len(data.rows)} samples to {escaped(args.json)}")
        return 0
    console = output_console()
    shown = data.rows[: args.show]
    max_w = max([w for row in shown for w in row.weights] + [weights.prompt, weights.response]) or 1.0
    console.print(legend(weights, max_w))
    for row in shown:
        counts = (
            f"{len(row)} tokens · prompt {row.prompt_tokens} · response {row.response_tokens}"
            f" · trainable {row.trainable_tokens}"
        )
        spans = {k: sum(1 for x in row.spans if x == k) for k in sorted(set(row.spans) - {""})}
        counts += "".join(f" · {k} {n}" for k, n in spans.items())
        if row.cuts:
            counts += f" · {row.cuts} boundary cut{'s' if row.cuts > 1 else ''} (a token straddled it)"
        console.print(
            Panel(
                colored_tokens(row, tokenizer, max_w),
                title=str(row.location),
                title_align="left",
                subtitle=counts,
                subtitle_align="left",
            )
        )
    return 0
