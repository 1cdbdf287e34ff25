"""`witune train CONFIG.yaml [--set key=value ...] [--preset alpaca|wit] [--resume] [--print-config]`:
fine-tune a causal LM with the weighted loss. Multi-GPU: `accelerate launch [--config_file F] -m witune.cli.train
CONFIG.yaml` (see docs/multi_gpu.md)."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    from witune.cli.common import add_config_command
    from witune.train.config import TrainConfig

    p = add_config_command(
        sub,
        "train",
        TrainConfig,
        "fine-tune a causal LM with weighted prompt/response loss",
        __doc__,
        "prompt_weight=0.1",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from witune.cli.common import load_command_config
    from witune.train.config import TrainConfig

    cfg = load_command_config(TrainConfig, args)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    from witune.train.engine import train

    result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        out = Console(stderr=True)
        out.print(f"[green]done[/]: {result.steps} steps in {result.seconds:.0f} s, final loss {result.final_loss:.4f}")
        out.print(
            f"model: {result.model_dir}\nmetrics: {result.metrics_path}\nconfig: {result.output_dir / 'config.yaml'}",
            highlight=False,
        )
    return 0


if __name__ == "__main__":  # `python -m witune.cli.train`: what `accelerate launch -m` and torchrun start
    from witune.cli.main import main

    sys.exit(main(["train", *sys.argv[1:]]))
