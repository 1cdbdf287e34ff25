"""`witune invert DATA -o OUT`: prompt inversion as in the PLW paper (AlpacaDataShort / Tiny / Medium): swap
instruction and completion of long-completion samples, or of the samples that bring Rg to --target-rg."""

from __future__ import annotations

import argparse

from witune.cli.common import escaped, input_paths, output_console, positive_float


def register(sub) -> None:
    p = sub.add_parser(
        "invert",
        help="prompt inversion (PLW paper): make short-completion data",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("data", help="Alpaca data file (instruction/input/output; .json or .jsonl)")
    p.add_argument("-o", "--output", required=True, help="output file (.json array or .jsonl, Alpaca records)")
    p.add_argument(
        "--target-rg",
        type=positive_float,
        default=None,
        help="invert just enough samples to reach this Rg (paper: Tiny 0.042, Medium 1.0); "
        "default: invert every long-completion sample (AlpacaDataShort)",
    )
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--seed", type=int, default=0, help="seed of the order in which samples are taken")
    p.add_argument("--model", default="smollm2", help="tokenizer that counts tokens for Rg")
    p.add_argument(
        "--rg-definition",
        default="ratio_of_means",
        choices=["ratio_of_means", "mean_of_ratios"],
        help="which data-set Rg the target refers to",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from witune.atomic import check_output
    from witune.stats import invert, read_alpaca, write_records
    from witune.stats.loading import get_tokenizer

    check_output(args.output, input_paths(args), args.force)  # before any work: never onto the input, never silently
    err = Console(stderr=True)
    with err.status("reading and counting tokens"):
        records = read_alpaca(args.data)
        tokenizer = get_tokenizer(args.model)
        result = invert(records, tokenizer, args.target_rg, args.seed, args.rg_definition)
    if result.target is not None and not result.reached:
        # A file with another Rg than asked for would silently change the experiment: stop, write nothing.
        lo, hi = result.reachable
        name = result.definition.replace("_", " ")
        err.print(
            f"error: {args.data}: target Rg {result.target:g} ({name}) cannot be reached by inverting samples: "
            f"the reachable minimum is {lo:.4g} (maximum {hi:.4g}); the closest subset gives "
            f"{result.rg_after[result.definition]:.4g}. Nothing written."
        )
        return 1
    path = write_records(result.records, args.output)
    t = Table(title=escaped(f"{args.data} -> {path}"))
    t.add_column("measure")
    t.add_column("before", justify="right")
    t.add_column("after", justify="right")
    for key in ("ratio_of_means", "mean_of_ratios"):
        mark = " (target)" if key == result.definition and result.target is not None else ""
        t.add_row(f"Rg {key.replace('_', ' ')}{mark}", f"{result.rg_before[key]:.4g}", f"{result.rg_after[key]:.4g}")
    t.add_row("samples", str(len(records)), str(len(result.records)))
    t.add_row("inverted", "", f"{len(result.inverted)} of {result.candidates} candidates")
    output_console().print(t)
    if result.target is not None:
        output_console().print(f"target Rg {result.target:g}, reached {result.rg_after[result.definition]:.4g}")
    if result.not_invertible:
        err.print(
            f"[yellow]{len(result.not_invertible)} multi-turn records (history) left as they are[/], "
            f"first: {result.not_invertible[0]}"
        )
    return 0
