"""Arguments shared by commands that read data and weigh tokens."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from witune.analysis.engines import NAMES as ENGINES
from witune.data.formats import FORMATS
from witune.data.pipeline import TRUNCATIONS
from witune.data.readers import SUFFIX_LIST
from witune.data.render import TEMPLATES
from witune.errors import ConfigError


# Argument types: argparse checks them while parsing, so a bad number is one usage line before any model or
# data is loaded (not a traceback after minutes of work, nor a silently empty result).
def int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def weight_value(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a loss weight must be >= 0, got {text}")
    return value


def normalization_arg(text: str) -> str | float:
    """`--normalization`: parsed here, at the edge, into a name or a number (`witune.loss.Normalization`)."""
    from witune.loss import parse_normalization

    try:
        return parse_normalization(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e}, got {text!r}") from None


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help=f"data file ({SUFFIX_LIST}), dataset folder, or datasets hub name")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="record format")
    p.add_argument(
        "--template",
        default="auto",
        choices=list(TEMPLATES),
        help="auto (alpaca data -> alpaca, prompt/completion -> plain, chats -> chat), alpaca, chat, plain",
    )
    p.add_argument("--max-length", type=int_at_least(2), default=None, help="truncate samples to this many tokens")
    p.add_argument(
        "--truncation",
        default="left",
        choices=list(TRUNCATIONS),
        help="left (cut the prompt's start, keep the response), right (cut the end), drop",
    )
    p.add_argument(
        "--final-turn-only",
        action="store_true",
        help="train only the last assistant turn; earlier turns count as prompt",
    )
    p.add_argument(
        "--skip-bad", action="store_true", help="skip bad records and report them instead of stopping at the first"
    )
    p.add_argument("--limit", type=int_at_least(1), default=None, help="use only the first N examples")
    p.add_argument("--split", default="train", help="split of a dataset folder or hub dataset")


def add_model_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--model",
        required=required,
        help="HF hub name, local folder, .gguf file, or 'smollm2' (offline SmolLM2-135M-Instruct)",
    )


def add_weight_args(p: argparse.ArgumentParser, prompt_default: float = 0.0) -> None:
    p.add_argument(
        "--prompt-weight",
        "--lambda-p",
        type=weight_value,
        default=prompt_default,
        help="lambda_p: weight of prompt tokens",
    )
    p.add_argument(
        "--response-weight", "--lambda-r", type=weight_value, default=1.0, help="lambda_r: weight of response tokens"
    )
    p.add_argument(
        "--plw", type=weight_value, default=None, help="prompt-loss weight (PLW paper): sets prompt weight, response 1"
    )
    p.add_argument(
        "--role-weight",
        action="append",
        default=[],
        metavar="ROLE=W",
        help="weight for every token of a role (system, user, assistant, tool, template); repeatable",
    )
    p.add_argument(
        "--span-weight",
        action="append",
        default=[],
        metavar="SPAN=W",
        help="weight multiplying every token of a span inside a message: think (<think>...</think>), tool_call "
        "(<tool_call>...</tool_call>) or a kind named in --span-markers; repeatable",
    )
    p.add_argument(
        "--span-markers",
        action="append",
        default=[],
        metavar="SPAN=OPEN,CLOSE",
        help="delimiters of a span kind, e.g. reason='<reason>,</reason>' (defaults: think, tool_call); repeatable",
    )
    p.add_argument(
        "--allow-weight-above-one",
        action="store_true",
        help="accept weights above 1 (outside the papers' range [0, 1]); a warning is printed",
    )


_WEIGHT_FLAGS = {
    "prompt_weight": "--prompt-weight",
    "response_weight": "--response-weight",
    "plw": "--plw",
    "role_weights": "--role-weight",
    "span_weights": "--span-weight",
}


def role_weights(args: argparse.Namespace):
    from witune.data.weights import build_role_weights

    weights, warnings = build_role_weights(
        args.prompt_weight,
        args.response_weight,
        args.plw,
        _named_values(args.role_weight, "--role-weight", "ROLE=NUMBER", _number),
        _named_values(getattr(args, "span_weight", []), "--span-weight", "SPAN=NUMBER", _number),
        _named_values(getattr(args, "span_markers", []), "--span-markers", "SPAN=OPEN,CLOSE", _pair),
        allow_above_one=args.allow_weight_above_one,
        hint="add --allow-weight-above-one",
        label=lambda key, item: _WEIGHT_FLAGS[key] if item is None else f"{_WEIGHT_FLAGS[key]} {item}",
    )
    for warning in warnings:
        print_error(warning, "warning")
    return weights


def _number(text: str) -> float:
    return float(text)


def _pair(text: str) -> tuple[str, str]:
    opening, sep, closing = text.partition(",")
    if not sep:
        raise ValueError(text)
    return opening, closing


def _named_values(items: list[str], flag: str, form: str, parse: Callable[[str], object]) -> dict:
    """['a=1', 'b=2'] -> {'a': parse('1'), 'b': parse('2')}; one clear line for a malformed item."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError(item)
            out[name.strip()] = parse(value)
        except ValueError:
            raise ConfigError(f"{flag} expects {form}, got {item!r}") from None
    return out


def load_rows(args: argparse.Namespace, tokenizer, weights):
    """Data path -> tokenized rows, reporting skipped records on stderr."""
    from rich.console import Console

    from witune.data import load_examples, tokenize_examples

    on_error = "skip" if args.skip_bad else "raise"
    loaded = load_examples(args.data, format=args.format, on_error=on_error, split=args.split, limit=args.limit)
    data = tokenize_examples(
        loaded.examples,
        tokenizer,
        weights,
        template=args.template,
        max_length=args.max_length,
        truncation=args.truncation,
        final_turn_only=args.final_turn_only,
        on_error=on_error,
        progress=len(loaded.examples) > 2000,
    )
    err = Console(stderr=True)
    for e in loaded.skipped + data.skipped + data.zero_trainable:
        err.print(f"[yellow]skipped:[/] {escaped(e)}", highlight=False, soft_wrap=True)
    for line in data.warnings(weights):
        print_error(line, "warning")
    err.print(f"[dim]{escaped(loaded.summary())}; {escaped(data.summary())}[/]", highlight=False)
    return data


# Off a terminal (a log file, CI, a pipe) rich would cut tables at 80 columns ("lambda…"): there lines may be as
# long as their content. A width set with $COLUMNS is kept.
_WIDTH_OFF_TERMINAL = 1000


def output_console(stderr: bool = False):
    """The rich Console of every command's output: the terminal's width, or tables sized to their content
    where the output is not a terminal."""
    import os

    from rich.console import Console

    out = Console(stderr=stderr)
    if out.is_terminal or "COLUMNS" in os.environ:
        return out
    return Console(stderr=stderr, width=_WIDTH_OFF_TERMINAL)


# The arguments that name what a command reads (files, model, dataset or sweep folders): no output may be one of
# them or lie inside one (`witune.atomic.check_output`).
INPUT_ARGS = ("data", "model", "tokenizer", "sweep", "losses", "features", "items", "data_dir", "db", "judge")


def input_paths(args: argparse.Namespace, *more: object) -> list[str]:
    """What the command `args` reads, for `check_output`: every input argument it has, and `more`."""
    named = [getattr(args, k, None) for k in INPUT_ARGS]
    return [str(v) for v in (*named, *more) if v is not None]


def print_error(message: object, label: str = "error") -> None:
    """The one error printer: a single line on stderr. The message is user text (paths, record keys, values),
    so it is escaped: `[/]` in a file name would otherwise be read as rich markup and crash the printer."""
    from rich.console import Console
    from rich.markup import escape

    style = "bold red" if label == "error" else "yellow"
    Console(stderr=True).print(f"[{style}]{label}:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def add_model_options(p) -> None:
    """Options shared by `witune analyze` and `witune report`: engine, primary metrics, groups, bootstrap."""
    p.add_argument(
        "--engine",
        choices=list(ENGINES),
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
        "--variant",
        default=None,
        metavar="WEIGHTS",
        help="the variant to analyse when the sweep has further weight axes (weight_axes), e.g. "
        "'span_weights.think=0.5'; runs of different variants are never pooled",
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
    """`KEY=VALUE` arguments of a repeatable option as a dict; a malformed one is one error line."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise SystemExit(f"{option} {item!r}: expected {what}")
        out[key.strip()] = value.strip()
    return out


def parse_primary(items: list[str]) -> dict[str, str]:
    return parse_pairs(items, "--primary", "BENCHMARK=METRIC")


def analysis_from_args(args: argparse.Namespace, quiet: bool = False):
    """The analysis `witune analyze` and `witune report` print: the arguments handed to the workflow."""
    from witune.workflows import analyze_results

    return analyze_results(
        args.sweep,
        args.losses,
        getattr(args, "features", None),
        engine=args.engine,
        primary=parse_primary(args.primary),
        groups=parse_pairs(args.group, "--group", "TASK=BENCHMARK"),
        items=args.items,
        r_timeout=args.r_timeout,
        n_boot=args.bootstrap,
        seed=args.seed,
        progress=not quiet,
        variant=args.variant,
    )


def os_error_line(err: OSError, outputs: list[str] | None = None) -> str:
    """'PATH: strerror' for a file that could not be read or written (a folder, read-only, a full disk).
    Without a file name in the error (write() on a full disk), the command's output paths are named."""
    names = [str(n) for n in (err.filename, err.filename2) if n is not None]
    what = err.strerror or str(err) or type(err).__name__
    if names:
        return f"{' -> '.join(names)}: {what}"
    return f"{what} (writing {', '.join(outputs)})" if outputs else what


def escaped(text: object) -> str:
    """User text to embed in rich markup (error and skip lines, tables with markup)."""
    from rich.markup import escape

    return escape(str(text))


def add_set_option(p: argparse.ArgumentParser, help: str) -> None:
    """`--set KEY=VALUE` (repeatable) into `args.overrides`, parsed by `witune.flat_config.parse_overrides`."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_config_command(sub, name: str, config_cls: type, help: str, doc: str | None, example: str) -> Any:
    """The parser of a command run from a flat config (`witune train`, `witune dpo`): the config file, `--set`,
    `--preset`, `--resume`, `--overwrite` and `--print-config`, with every config key in the `--help` epilog."""
    p = sub.add_parser(
        name,
        help=help,
        description=doc,
        epilog=config_cls.keys_help(),  # type: ignore[attr-defined]
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="YAML config file (see configs/; --print-config writes an annotated one)")
    add_set_option(p, f"override a config key (repeatable), e.g. --set {example}")
    presets = " or ".join(config_cls.PRESETS)  # type: ignore[attr-defined]
    p.add_argument("--preset", default=None, help=f"recipe applied before the config file: {presets}")
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
    return p


def load_command_config(config_cls: Any, args: argparse.Namespace) -> Any:
    """The config of `args`; with --print-config, a template: required keys not given get stand-ins."""
    return config_cls.load(args.config, args.overrides, args.preset, template=args.print_config)
