"""`witune analyze SWEEP`: the WIT and PLW papers' analyses of a sweep folder or a results CSV."""

from __future__ import annotations

import argparse
import json
import sys

from witune.cli.common import (
    add_model_options,
    analysis_from_args,
    escaped,
    input_paths,
    output_console,
    print_error,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="aggregates, WIT heatmap optima, PLW mixed-model fit, GAM, correlations and training dynamics of a sweep",
    )
    p.add_argument("sweep", help="sweep folder (with sweep.db) or results CSV")
    p.add_argument("--losses", default=None, help="CSV of training losses (run_id, step, loss) for the loss RSD")
    p.add_argument(
        "--features", default=None, help="CSV of features (level, name, feature, value) for the optimum correlations"
    )
    add_model_options(p)
    p.add_argument("--plots", default=None, help="folder to write the figures to as PNG")
    p.add_argument("--json", action="store_true", help="print every table as JSON instead of rich tables")
    p.set_defaults(func=run)


def _console(stderr: bool = False):

    return output_console(stderr=stderr)


def _rich_table(title: str, df, digits: int = 3):
    from rich.markup import escape
    from rich.table import Table

    # escape: labels such as "[r] R glmmTMB ..." are text, not rich markup
    t = Table(title=escape(title), title_justify="left")
    for col in df.columns:
        t.add_column(escape(str(col)))
    for row in df.itertuples(index=False):
        t.add_row(*[f"{v:.{digits}g}" if isinstance(v, float) else escape(str(v)) for v in row])
    return t


def run(args: argparse.Namespace) -> int:
    import pandas as pd
    from rich.markup import escape

    from witune.analysis.noise import RULE
    from witune.analysis.summary import diagnostic_columns, to_json
    from witune.report.readings import recommendation

    if args.plots:  # before the analysis: never into the sweep folder, nor under a file
        from witune.atomic import check_output

        check_output(args.plots, input_paths(args), what="plot folder", folder=True)
    try:
        a = analysis_from_args(args, quiet=args.json)
    except RuntimeError as exc:  # no R for --engine r, R failing or hanging, no scores: one line
        print_error(exc)
        return 2
    if args.json:
        json.dump({**to_json(a), "noise_rule": RULE, "recommendation": recommendation(a)}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        con = _console()
        con.print(f"[bold]engine: {a.engine}[/]")
        con.print(_rich_table("Which engine and model fitted what", pd.DataFrame(a.models_used)))
        votes = ", ".join(f"{b}={m}" for b, m in sorted(a.primary.items()))
        con.print(f"One vote per benchmark, on its primary metric: {escape(votes)}")
        con.print(
            _rich_table(
                "Best configuration per model x dataset (relative aggregate of scores; diagnostics excluded)", a.best
            )
        )
        con.print(escape(RULE))
        con.print(_rich_table("Where the optimum lies (model x dataset x benchmark)", a.optimum_counts))
        for f in a.fits:
            con.print(_rich_table(f"PLW fit on {f.dataset}: {f.model}", pd.DataFrame([f.summary()])))
            con.print(f"[bold]PLW reading ({escape(f.dataset)}):[/] {escape(f.reading())}")
            for note in f.notes:
                con.print(f"[yellow]fit note ({escape(f.dataset)}):[/] {escape(note)}")
        if a.gam is not None:
            con.print(_rich_table(f"Optimal PLW per Rg: [{a.gam.engine}] {a.gam.model}", a.gam.table))
        if len(a.correlations):
            con.print(_rich_table("Correlations with the optimal prompt weight (n = distinct units)", a.correlations))
        diag = diagnostic_columns(a)
        if diag:
            per = a.runs.groupby("prompt_weight")[diag].mean().reset_index()
            con.print(_rich_table("Diagnostics by prompt weight (mean over runs; never in any aggregate)", per))
        if a.stages is not None and len(a.stages):
            con.print(_rich_table("Gain over conventional tuning (0, 1), % : after SFT and after DPO", a.stages))
        if a.robustness is not None:
            con.print(
                _rich_table("Prompt robustness (diagnostic: accuracy drop under perturbed prompts)", a.robustness)
            )
        for line in recommendation(a):
            con.print(f"[bold]recommendation:[/] {escape(line)}")
        for note in a.notes:
            con.print(f"[yellow]note:[/] {escaped(note)}")
    if args.plots:
        _write_plots(a, args.plots)
    return 0


def _write_plots(a, folder: str) -> None:
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    from witune.analysis import figures, wit
    from witune.analysis.dynamics import dynamics_figure
    from witune.analysis.gam import gam_figure
    from witune.atomic import atomic_savefig

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    figs = {
        "aggregates": figures.aggregate_figure(a.aggregates, a.results),
        "wit_heatmaps": wit.heatmap_figure(a.gains) if not a.gains.empty else None,
        "plw_fit": figures.plw_fit_figure(a.results, a.fits),
        "gam": gam_figure(a.gam) if a.gam is not None else None,
        "dynamics": dynamics_figure(a.runs),
    }
    for name, fig in figs.items():
        if fig is not None:
            atomic_savefig(fig, out / f"{name}.png", dpi=110)
            matplotlib.pyplot.close(fig)
