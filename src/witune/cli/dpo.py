"""`witune dpo CONFIG.yaml [--set key=value ...] [--preset zephyr|quick] [--resume] [--print-config]`:
preference optimisation (TRL's DPOTrainer) starting from a model `witune train` wrote. Needs TRL:
pip install "witune[trl]". No preference data at hand? `witune dpo-pairs` makes self-play pairs."""

from __future__ import annotations

import argparse
import sys


def _keys_help() -> str:
    from witune.cli.common import config_keys_help
    from witune.dpo.config import PRESETS, DPOConfig, field_docs

    return config_keys_help(DPOConfig, field_docs(), PRESETS)


def register(sub) -> None:
    p = sub.add_parser(
        "dpo",
        help="preference optimisation (DPO, via TRL) of a `witune train` model",
        description=__doc__,
        epilog=_keys_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="YAML config file (--print-config writes an annotated one)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set beta=0.1",
    )
    p.add_argument("--preset", default=None, help="recipe applied before the config file: zephyr or quick")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in output_dir")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in a non-empty output_dir (checkpoints included) once data and model loaded",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config as annotated YAML and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from witune.dpo.config import load_dpo_config, to_yaml

    if args.print_config:  # a template needs no model or data
        print(to_yaml(load_dpo_config(args.config, args.overrides, args.preset, validate=False)), end="")
        return 0
    cfg = load_dpo_config(args.config, args.overrides, args.preset)
    from witune.dpo.run import run_dpo

    r = run_dpo(cfg, resume=args.resume, overwrite=args.overwrite)
    from rich.console import Console

    out = Console(stderr=True)
    out.print(f"[green]done[/]: {r.steps} steps in {r.seconds:.0f} s, final DPO loss {r.final_loss:.4f}")
    for stage, m in r.eval.items():
        out.print(
            f"held-out pairs {stage}: loss {m.get('eval_loss', float('nan')):.4f}, reward margin "
            f"{m.get('eval_rewards/margins', float('nan')):.4f}, accuracy "
            f"{m.get('eval_rewards/accuracies', float('nan')):.3f}",
            highlight=False,
        )
    out.print(f"model: {r.model_dir}\nmetrics: {r.metrics_path}", highlight=False)
    return 0


if __name__ == "__main__":  # `python -m witune.cli.dpo`: what the sweep runs
    from witune.cli.main import main

    sys.exit(main(["dpo", *sys.argv[1:]]))
