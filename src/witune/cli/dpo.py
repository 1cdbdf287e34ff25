"""`witune dpo CONFIG.yaml [--set key=value ...] [--preset zephyr|quick] [--resume] [--print-config]`:
preference optimisation (TRL's DPOTrainer) starting from a model `witune train` wrote. Needs TRL:
pip install "witune[trl]". No preference data at hand? `witune dpo-pairs` makes self-play pairs."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    from witune.cli.common import add_config_command
    from witune.dpo.config import DPOConfig

    p = add_config_command(
        sub, "dpo", DPOConfig, "preference optimisation (DPO, via TRL) of a `witune train` model", __doc__, "beta=0.1"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from witune.cli.common import load_command_config
    from witune.dpo.config import DPOConfig

    cfg = load_command_config(DPOConfig, args)
    if args.print_config:  # a template needs no model or data
        print(cfg.to_yaml(), end="")
        return 0
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
