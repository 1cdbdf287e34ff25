"""`witune <command>`: each command is a module in this package with `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import sys

from witune import __version__

# Command modules import their heavy dependencies (torch, transformers) inside `run`, so `--help` is fast.
COMMANDS = [
    "inspect",
    "score",
    "stats",
    "recommend",
    "invert",
    "clean",
    "train",
    "demo",
    "sweep",
    "tune",
    "eval",
    "analyze",
    "report",
    "dpo",
    "dpo_pairs",
]


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line, as every other bad input (argparse would print the whole usage first); the
    command's --help is named for the rest."""

    def error(self, message: str):
        from witune.cli.common import print_error

        print_error(f"{self.prog}: {message} (see {self.prog} --help)")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="witune",
        description="Weighted instruction tuning: weigh prompt and "
        "response tokens in the loss, measure data, sweep, evaluate and report.",
    )
    parser.add_argument("--version", action="version", version=f"witune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"witune.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from witune.cli.common import os_error_line, print_error
    from witune.errors import ConfigError, DataError

    try:
        return int(args.func(args) or 0)
    except (DataError, ConfigError) as e:
        # Bad input or configuration: one clear line, never a traceback from deep inside a library.
        print_error(e)
        return 2
    except OSError as e:
        # A file that cannot be read or written (a folder, read-only, a full disk, gone): its path and why.
        print_error(os_error_line(e, _output_paths(args)))
        return 2
    except KeyboardInterrupt:
        return 130


def _output_paths(args: argparse.Namespace) -> list[str]:
    """The output paths given on the command line: a write error without a file name (a full disk raises
    ENOSPC from write(), which knows no path) is reported against them."""
    names = ("output", "json", "json_out", "plot", "plots", "report", "out")
    return [str(v) for n in names if isinstance(v := getattr(args, n, None), str) and v != "-"]


if __name__ == "__main__":
    sys.exit(main())
