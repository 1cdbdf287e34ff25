"""`witune dpo-pairs DATA --model M -o pairs.jsonl`: preference pairs from instruction data, self-play style
(SPIN): the data's reference answer is chosen, the model's own greedy answer is rejected. A stand-in for a
human preference set (e.g. UltraFeedback, for users with a network) that runs offline on any SFT data."""

from __future__ import annotations

import argparse

from witune.cli.common import int_at_least


def register(sub) -> None:
    p = sub.add_parser(
        "dpo-pairs", help="self-play preference pairs (reference chosen, model answer rejected)", description=__doc__
    )
    p.add_argument("data", help="instruction data (any format `witune train` reads)")
    p.add_argument(
        "--model",
        required=True,
        help="the model whose answers are rejected: a `witune train` run folder, a model folder, or 'smollm2'",
    )
    p.add_argument(
        "-o", "--output", required=True, help="JSONL file to write (prompt, chosen, rejected); not the input"
    )
    p.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--limit", type=int_at_least(1), default=None, help="use only the first N records")
    p.add_argument("--max-new-tokens", type=int_at_least(1), default=128, help="length cap of the model's answers")
    p.add_argument("--batch-size", type=int_at_least(1), default=8)
    p.add_argument(
        "--template", default="auto", help="prompt template, as in `witune train` (auto, alpaca, chat, plain)"
    )
    p.add_argument("--format", default="auto", help="record format, as in `witune train`")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from witune.dpo.pairs import make_pairs

    r = make_pairs(
        args.data,
        args.model,
        args.output,
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        template=args.template,
        format=args.format,
        force=args.force,
    )
    Console(stderr=True).print(
        f"[green]wrote[/] {r.written} pairs to {r.path} ({r.same} skipped: the model already "
        f"gave the reference; {r.empty} skipped: empty answer)",
        highlight=False,
    )
    return 0
