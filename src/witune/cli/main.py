"""`witune <command>`: each command is a module in this package with `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console

from witune import __version__

# Command modules import their heavy dependencies (torch, transformers) inside `run`, so `--help` is fast.
COMMANDS = ["inspect", "score", "stats", "recommend", "invert", "clean", "train", "demo", "sweep", "eval", "analyze", "report",
            "dpo", "dpo_pairs"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="witune", description="Weighted instruction tuning: weigh prompt and "
                                     "response tokens in the loss, measure data, sweep, evaluate and report.")
    parser.add_argument("--version", action="version", version=f"witune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"witune.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from witune.data.errors import ConfigError, DataError

    try:
        return int(args.func(args) or 0)
    except (DataError, ConfigError) as e:
        # Bad input or configuration: one clear line, never a traceback from deep inside a library.
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
