"""`witune analyze SWEEP`: the WIT and PLW papers' analyses of a sweep folder or a results CSV."""

from __future__ import annotations

import argparse
import json
import sys

from witune.cli.common import escaped, int_at_least, print_error, read_dpo_stage, read_sweep_folder


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


def add_model_options(p) -> None:
    """Options shared by `witune analyze` and `witune report`: engine, primary metrics, groups, bootstrap."""
    from witune.cli.common import positive_float

    p.add_argument(
        "--engine",
        choices=["auto", "r", "python"],
        default="auto",
        help="statistics engine: r = the PLW paper's own models (glmmTMB beta GLMM, mgcv GAM) via "
        "Rscript; python = Gaussian MixedLM + pygam approximation; auto = r when Rscript with "
        "glmmTMB and mgcv is installed, else python",
    )
    p.add_argument(
        "--r-timeout",
        type=positive_float,
        default=600.0,
        metavar="SECONDS",
        help="stop an Rscript fit that runs longer than this (one error line)",
    )
    p.add_argument(
        "--primary",
        action="append",
        default=[],
        metavar="BENCHMARK=METRIC",
        help="the metric a benchmark votes with (repeatable), e.g. ifeval=prompt_level_strict_acc",
    )
    p.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="TASK=BENCHMARK",
        help="fold a task (or fnmatch pattern) into a benchmark (repeatable; wins over the lm-eval group "
        "structure a sweep stores and over the grouping inferred from a CSV), e.g. 'mybench_*=mybench'",
    )
    p.add_argument(
        "--items",
        default=None,
        help="CSV of per-item scores (run_id, benchmark, metric, item, score): the noise guard pairs runs over items",
    )
    p.add_argument(
        "--bootstrap",
        type=int_at_least(0),
        default=0,
        help="parametric bootstrap replicates of the critical PLW, shown beside Fieller's interval (both engines)",
    )
    p.add_argument("--seed", type=int, default=0)


def parse_pairs(items: list[str], option: str, what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise SystemExit(f"{option} {item!r}: expected {what}")
        out[key.strip()] = value.strip()
    return out


def parse_primary(items: list[str]) -> dict[str, str]:
    return parse_pairs(items, "--primary", "BENCHMARK=METRIC")


def load_inputs(args: argparse.Namespace):
    """Results, losses and features named on the command line (shared with `witune report`)."""
    from witune.analysis.results import load_features, load_losses, load_results

    if _is_dir(args.sweep):
        results, losses = read_sweep_folder(args.sweep)
    else:
        results, losses = load_results(args.sweep), None
    if args.losses:
        losses = load_losses(args.losses)
    features = load_features(args.features) if getattr(args, "features", None) else None
    return results, losses, features


def _is_dir(path: str) -> bool:
    from pathlib import Path

    return Path(path).is_dir()


def _size(path: str) -> str:
    from pathlib import Path

    p = Path(path)
    return f"{p.stat().st_size / 1e6:.1f} MB" if p.is_file() else "sweep folder"


def analyze_with_progress(args: argparse.Namespace, quiet: bool = False):
    """Read and analyse with one progress bar on stderr that names each stage (every stage is linear)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from witune.analysis.results import load_items
    from witune.analysis.summary import analyze

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=quiet, transient=True, console=_console(stderr=True)) as bar:
        task = bar.add_task(f"reading {args.sweep} ({_size(args.sweep)})", total=1)
        results, losses, features = load_inputs(args)
        items = load_items(args.items) if getattr(args, "items", None) else None

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=f"{stage} ({len(results):,} rows)", completed=done, total=total)

        a = analyze(
            results,
            losses,
            features,
            n_boot=args.bootstrap,
            seed=args.seed,
            progress=progress,
            engine=getattr(args, "engine", "auto"),
            primary=parse_primary(getattr(args, "primary", [])),
            groups=parse_pairs(getattr(args, "group", []), "--group", "TASK=BENCHMARK"),
            items=items,
            r_timeout=getattr(args, "r_timeout", None),
        )
    dpo = read_dpo_stage(args.sweep)
    if dpo is not None:  # sweeps with a DPO stage: gains after SFT and after DPO
        from witune.analysis.stages import stage_gains

        a.stages = stage_gains(results, dpo)
    return a


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)


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

    try:
        a = analyze_with_progress(args, quiet=args.json)
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
