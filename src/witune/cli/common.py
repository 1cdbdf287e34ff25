"""Arguments shared by commands that read data and weigh tokens."""

from __future__ import annotations

import argparse

from witune.data.errors import ConfigError


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="data file (.json, .jsonl, .csv, .parquet), dataset folder, or datasets hub name")
    p.add_argument("--format", default="auto", help="record format: auto, alpaca, self_instruct, prompt_completion, messages, sharegpt")
    p.add_argument("--template", default="auto", help="auto (alpaca data -> alpaca, prompt/completion -> plain, chats -> chat), alpaca, chat, plain")
    p.add_argument("--max-length", type=int, default=None, help="truncate samples to this many tokens")
    p.add_argument("--truncation", default="left", help="left (cut the prompt's start, keep the response), right (cut the end), drop")
    p.add_argument("--final-turn-only", action="store_true", help="train only the last assistant turn; earlier turns count as prompt")
    p.add_argument("--skip-bad", action="store_true", help="skip bad records and report them instead of stopping at the first")
    p.add_argument("--limit", type=int, default=None, help="use only the first N examples")
    p.add_argument("--split", default="train", help="split of a dataset folder or hub dataset")


def add_model_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, help="HF hub name, local folder, .gguf file, or 'smollm2' (offline SmolLM2-135M-Instruct)")


def add_weight_args(p: argparse.ArgumentParser, prompt_default: float = 0.0) -> None:
    p.add_argument("--prompt-weight", "--lambda-p", type=float, default=prompt_default, help="lambda_p: weight of prompt tokens")
    p.add_argument("--response-weight", "--lambda-r", type=float, default=1.0, help="lambda_r: weight of response tokens")
    p.add_argument("--plw", type=float, default=None, help="prompt-loss weight (PLW paper): sets prompt weight, response 1")
    p.add_argument("--role-weight", action="append", default=[], metavar="ROLE=W",
                   help="weight for every token of a role (system, user, assistant, tool, template); repeatable")


def role_weights(args: argparse.Namespace):
    from witune.data import RoleWeights

    roles = {}
    for item in args.role_weight:
        role, sep, value = item.partition("=")
        try:
            roles[role.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--role-weight expects ROLE=NUMBER, got {item!r}") from None
        if not sep:
            raise ConfigError(f"--role-weight expects ROLE=NUMBER, got {item!r}")
    if args.plw is not None:
        return RoleWeights(args.plw, 1.0, roles)
    return RoleWeights(args.prompt_weight, args.response_weight, roles)


def load_rows(args: argparse.Namespace, tokenizer, weights):
    """Data path -> tokenized rows, reporting skipped records on stderr."""
    from rich.console import Console

    from witune.data import load_examples, tokenize_examples

    on_error = "skip" if args.skip_bad else "raise"
    loaded = load_examples(args.data, format=args.format, on_error=on_error, split=args.split, limit=args.limit)
    data = tokenize_examples(loaded.examples, tokenizer, weights, template=args.template, max_length=args.max_length,
                             truncation=args.truncation, final_turn_only=args.final_turn_only, on_error=on_error,
                             progress=len(loaded.examples) > 2000)
    err = Console(stderr=True)
    for e in loaded.skipped + data.skipped + data.zero_trainable:
        err.print(f"[yellow]skipped:[/] {e}", highlight=False, soft_wrap=True)
    err.print(f"[dim]{loaded.summary()}; {data.summary()}[/]", highlight=False)
    return data
