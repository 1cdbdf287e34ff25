"""`witune train CONFIG.yaml [--set key=value ...] [--preset alpaca|wit] [--resume] [--print-config]`:
fine-tune a causal LM with the weighted loss. Multi-GPU: `accelerate launch [--config_file F] -m witune.cli.train
CONFIG.yaml` (see docs/multi_gpu.md)."""

from __future__ import annotations

import argparse
import sys


def _keys_help() -> str:
    from witune.cli.common import config_keys_help
    from witune.train.config import PRESETS, TrainConfig, field_docs

    return config_keys_help(TrainConfig, field_docs(), PRESETS)


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune a causal LM with weighted prompt/response loss",
        description=__doc__,
        epilog=_keys_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config file (see configs/; --print-config writes an annotated one)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set prompt_weight=0.1",
    )
    p.add_argument("--preset", default=None, help="recipe applied before the config file: alpaca or wit")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest complete checkpoint in output_dir "
        "(refused when loss, data or schedule settings differ from the checkpoint's)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in a non-empty output_dir (its checkpoints too), once data and model have loaded",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config as annotated YAML and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from witune.train.config import load_config, to_yaml

    if args.print_config:
        # Printing needs no data: an empty `data` is allowed here, so `--print-config` alone gives a template.
        overrides = ["data=<your data file>", *args.overrides] if not _has_data(args) else args.overrides
        print(to_yaml(load_config(args.config, overrides, args.preset)), end="")
        return 0
    cfg = load_config(args.config, args.overrides, args.preset)
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


def _has_data(args: argparse.Namespace) -> bool:
    if any(o.split("=", 1)[0].strip() == "data" for o in args.overrides):
        return True
    if args.config:
        import yaml

        try:
            return bool((yaml.safe_load(open(args.config)) or {}).get("data"))
        except Exception:
            return False
    return False


if __name__ == "__main__":  # `python -m witune.cli.train`: what `accelerate launch -m` and torchrun start
    from witune.cli.main import main

    sys.exit(main(["train", *sys.argv[1:]]))
