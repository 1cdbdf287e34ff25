"""`witune report SWEEP -o report.html`: a self-contained HTML report of a sweep."""

from __future__ import annotations

import argparse

from witune.cli.common import escaped, int_at_least


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="self-contained HTML report (figures embedded) of a sweep")
    p.add_argument("sweep", help="sweep folder (with sweep.sqlite) or results CSV")
    p.add_argument("-o", "--output", default="report.html", help="HTML file to write")
    p.add_argument("--losses", default=None, help="CSV of training losses (run_id, step, loss) for the loss RSD")
    p.add_argument("--features", default=None,
                   help="CSV of features (level, name, feature, value) for the optimum correlations")
    p.add_argument("--bootstrap", type=int_at_least(0), default=200, help="bootstrap replicates for the critical-PLW interval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--title", default="witune sweep report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from witune.cli.analyze import analyze_with_progress
    from witune.report.html import write_report

    a = analyze_with_progress(args)
    path = write_report(a, args.output, args.title)
    Console().print(f"wrote {escaped(path)} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
