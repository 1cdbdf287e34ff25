"""`witune report SWEEP -o report.html`: a self-contained HTML report of a sweep."""

from __future__ import annotations

import argparse

from witune.cli.common import escaped, input_paths, output_console, print_error


def register(subparsers) -> None:
    from witune.cli.common import add_model_options

    p = subparsers.add_parser("report", help="self-contained HTML report (figures embedded) of a sweep")
    p.add_argument("sweep", help="sweep folder (with sweep.db) or results CSV")
    p.add_argument("-o", "--output", default="report.html", help="HTML file to write")
    p.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--losses", default=None, help="CSV of training losses (run_id, step, loss) for the loss RSD")
    p.add_argument(
        "--features", default=None, help="CSV of features (level, name, feature, value) for the optimum correlations"
    )
    add_model_options(p)
    p.add_argument("--title", default="witune sweep report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    from witune.atomic import check_output
    from witune.cli.common import analysis_from_args
    from witune.report.html import write_html_report

    check_output(args.output, input_paths(args), args.force)  # before the analysis
    try:
        a = analysis_from_args(args)
    except RuntimeError as exc:  # --engine r without R, R failing, no scores at all
        print_error(exc)
        return 2
    path = write_html_report(a, args.output, args.title)
    output_console().print(f"wrote {escaped(path)} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
