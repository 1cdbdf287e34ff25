"""`witune sweep CONFIG [--workers N] [--backend local|ray] [--resume]` and `witune sweep status SWEEP_DIR`:
train and evaluate every point of a grid of loss weights (and datasets, models, seeds), results in
`<output_dir>/sweep.db`. A killed sweep continues with `--resume`: done points are skipped, interrupted
trainings continue from their newest checkpoint. Presets: plw-paper (10 PLWs), wit-grid (35 weight pairs)."""

from __future__ import annotations

import argparse
import sys

from witune.cli.common import int_at_least, output_console, print_error


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="run a resumable grid of trainings + evaluations (or: sweep status DIR)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="sweep YAML (see configs/sweeps/), or the word 'status'")
    p.add_argument("folder", nargs="?", help="with 'status': the sweep folder to show")
    p.add_argument(
        "--workers", type=int_at_least(1), default=None, help="points trained at the same time (local backend)"
    )
    p.add_argument("--backend", choices=["local", "ray"], default=None, help="local worker processes, or Ray")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local instance)")
    p.add_argument("--out", default=None, help="sweep folder (overrides output_dir of the config)")
    p.add_argument("--resume", action="store_true", help="continue a sweep: skip done points, rerun the others")
    p.add_argument("--dry-run", action="store_true", help="list the points and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    if args.config == "status":
        if not args.folder:
            print_error("witune sweep status: give the sweep folder, e.g. witune sweep status sweeps/plw")
            return 2
        from witune.sweep.status import status_table

        output_console().print(status_table(args.folder))
        return 0
    if args.folder:
        print_error(f"witune sweep: unexpected argument {args.folder!r} (did you mean `witune sweep status DIR`?)")
        return 2
    from witune.sweep import expand, load_sweep_config, run_sweep
    from witune.sweep.preflight import check_names
    from witune.sweep.status import status_table

    cfg = load_sweep_config(
        args.config,
        {"workers": args.workers, "backend": args.backend, "ray_address": args.ray_address, "output_dir": args.out},
    )
    console = output_console()
    if args.dry_run:
        points = expand(cfg)
        check_names(cfg, points)  # what run_sweep checks before its first point
        for p in points:
            lab = p.labels
            console.print(
                f"{p.run_id}  model={lab.model} data={lab.dataset} λp={lab.prompt_weight:g} "
                f"λr={lab.response_weight:g} norm={lab.normalization} seed={lab.seed}"
                + (f" {lab.variant}" if lab.variant else ""),
                highlight=False,
                soft_wrap=True,
            )
        console.print(f"{len(points)} points; names checked: data, models, DPO data, evaluation tasks", highlight=False)
        return 0
    summary = run_sweep(cfg, resume=args.resume, progress=not args.no_progress)
    console.print(status_table(summary.folder))
    console.print(
        f"{summary.points} points: {summary.skipped} already done, {summary.done} done now, "
        f"{summary.failed} failed"
        + (f", {summary.stopped} stopped early by successive halving" if summary.stopped else "")
        + f". Database: {summary.folder / 'sweep.db'}",
        highlight=False,
    )
    return 1 if summary.failed else 0


if __name__ == "__main__":  # `python -m witune.cli.sweep`: what `accelerate launch -m` and torchrun start
    from witune.cli.main import main

    sys.exit(main(["sweep", *sys.argv[1:]]))
