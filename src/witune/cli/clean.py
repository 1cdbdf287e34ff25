"""`witune clean DATA -o OUT`: drop invalid records, empty or placeholder outputs ("<noinput>", "N/A"), exact
duplicates and overlong samples; write the cleaned file and a report with one line per removed record (the record
itself, its location and the reason). OUT must not be the input; an existing OUT needs --force."""

from __future__ import annotations

import argparse
from pathlib import Path

from witune.cli.common import escaped, input_paths, int_at_least, output_console


def register(sub) -> None:
    p = sub.add_parser(
        "clean",
        help="remove invalid, empty, placeholder, duplicate and overlong records",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("data", help="data file (.json, .jsonl, .csv)")
    p.add_argument("-o", "--output", required=True, help="cleaned file (.json array or .jsonl, records unchanged)")
    p.add_argument(
        "--report",
        default=None,
        help="report file (JSON Lines: every removed record with its location and reason); "
        "default: OUT with .removed.jsonl",
    )
    p.add_argument("--force", action="store_true", help="replace OUT and the report if they exist")
    p.add_argument("--model", default=None, help="tokenizer for the overlong check (default: count characters)")
    p.add_argument("--max-tokens", type=int_at_least(1), default=2048, help="overlong limit with --model")
    p.add_argument("--max-chars", type=int_at_least(1), default=16000, help="overlong limit without --model")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from witune.atomic import OutputError, check_output
    from witune.stats import clean, write_records, write_removals
    from witune.stats.loading import get_tokenizer

    # Checked before any work: `clean X -o X` once rewrote its own input with the survivors only.
    out = check_output(args.output, input_paths(args), args.force)
    report = Path(args.report) if args.report else out.with_name(out.stem + ".removed.jsonl")
    check_output(report, input_paths(args), args.force, what="report")
    if report.resolve() == out.resolve():
        raise OutputError(f"{report}: the report and the cleaned file must be different files")
    tokenizer = get_tokenizer(args.model) if args.model else None
    with Console(stderr=True).status("checking records"):
        result = clean(args.data, tokenizer, args.max_tokens, args.max_chars)
    write_records(result.kept, out)
    write_removals(result, report)
    t = Table(title=escaped(f"{args.data}: {result.total} records, {len(result.kept)} kept -> {out}"))
    t.add_column("reason")
    t.add_column("removed", justify="right")
    t.add_column("first", justify="left")
    for reason, n in result.counts().items():
        first = next((r for r in result.removed if r.reason == reason), None)
        label = f"{reason} ({result.overlong_rule})" if reason == "overlong" else reason
        t.add_row(label, str(n), f"{first.location}: {first.detail}" if first else "")
    console = output_console()
    console.print(t)
    console.print(f"report: {escaped(report)} ({len(result.removed)} lines)")
    return 0
