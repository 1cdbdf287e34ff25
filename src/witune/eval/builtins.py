"""witune's own evaluations, named `witune:<name>[=<argument>]` on the command line.

| name | argument | metrics |
|---|---|---|
| `witune:generation_length` | instructions file (default: AlpacaEval 1 instructions) | mean_tokens |
| `witune:generation` | data file with reference completions | exact_match, bleu |
| `witune:memorization` | the *training* data file | bleu (corpus BLEU-4 on sampled training prompts) |
| `witune:winrate` | reference outputs JSON (default: AlpacaEval 1 text-davinci-003) | win_rate (needs a judge) |
| `witune:robustness` | `arc_challenge` or `piqa` [`:rate=R:shots=K:seeds=N:only=P+Q`] | clean / perturbed accuracy, drop |

Every evaluator takes the loaded model and tokenizer plus an `EvalOptions` and returns metric rows
{task, metric, value, stderr, higher_is_better}. `BUILTINS` maps names to evaluators; other parts of witune (or
a user's code) add theirs with `register_evaluator(name, fn, diagnostics)`, which refuses to replace an
existing name. `diagnostics` (`witune.results_schema.Diagnostics`) says which of its metrics are diagnostics:
that one declaration is what the sweep stores as each row's role and what the analysis and the report read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from witune.eval import generation as gen
from witune.eval.judge import JudgePrompt, LocalJudge, OpenAIJudge, load_reference_outputs, pairwise_win_rate
from witune.eval.local_tasks import default_data_dir
from witune.eval.rows import MetricRow, metric_row
from witune.results_schema import Diagnostics


@dataclass
class EvalOptions:
    """Settings shared by the built-in evaluators (flat, so the CLI and the sweep fill it the same way)."""

    limit: int | None = None  # items per task; memorisation defaults to the paper's 10,000 prompts
    max_new_tokens: int = 256
    batch_size: int = 8
    seed: int = 0
    judge: str | None = None  # local model folder, or an http(s) URL of an OpenAI-compatible endpoint
    judge_model: str = "judge"  # model name sent to an OpenAI-compatible endpoint
    judge_api_key: str | None = None
    judge_allow_http: bool = False  # plain http to a non-loopback judge (the key would travel unencrypted)


Evaluator = Callable[[object, object, str | None, EvalOptions], list[MetricRow]]


def _alpaca_eval_file(name: str = "text_davinci_003_model_outputs.json") -> Path:
    data = default_data_dir()
    if data is None:
        raise FileNotFoundError("AlpacaEval files not found; pass a file (witune:...=FILE) or set WITUNE_EVAL_DATA")
    return data / "alpaca_eval" / name


def _prompts(tok, path: str | None, limit: int | None) -> list[str]:
    """Formatted prompts: AlpacaEval 1 instructions by default, else a data file rendered as in training."""
    if not path:
        recs = load_reference_outputs(_alpaca_eval_file())[:limit]
        return [gen.format_prompt(tok, r["instruction"]) for r in recs]
    return [p for p, _ in gen.training_prompts(_examples(path, "generation_length", limit), tok)]


def generation_length(model, tok, arg: str | None, opt: EvalOptions) -> list[MetricRow]:
    """Mean length in tokens of greedy generations (PLW paper: length on the AlpacaEval 1 set)."""
    prompts = _prompts(tok, arg, opt.limit)
    outs = gen.generate_greedy(model, tok, prompts, opt.max_new_tokens, opt.batch_size)
    mean, se = gen.mean_and_stderr([g.num_tokens for g in outs])
    return [metric_row("witune:generation_length", "mean_tokens", mean, se, higher=False)]


def _examples(arg: str | None, what: str, limit: int | None = None):
    if not arg:
        raise ValueError(f"witune:{what} needs a data file: witune:{what}=PATH")
    from witune.data import load_examples

    return load_examples(arg, limit=limit).examples


def generation_task(model, tok, arg: str | None, opt: EvalOptions) -> list[MetricRow]:
    """Exact match and corpus BLEU of greedy generations against each example's reference response."""
    pairs = gen.training_prompts(_examples(arg, "generation", opt.limit), tok)
    outs = gen.generate_greedy(model, tok, [p for p, _ in pairs], opt.max_new_tokens, opt.batch_size)
    preds, refs = [g.text for g in outs], [c for _, c in pairs]
    em, se = gen.exact_match(preds, refs)
    return [
        metric_row("witune:generation", "exact_match", em, se),
        metric_row("witune:generation", "bleu", gen.corpus_bleu(preds, refs), None),
    ]


def memorization(model, tok, arg: str | None, opt: EvalOptions) -> list[MetricRow]:
    """PLW paper: corpus BLEU of generations for sampled unique training prompts vs. training completions."""
    pairs = gen.training_prompts(_examples(arg, "memorization"), tok)
    n = opt.limit if opt.limit is not None else 10_000
    bleu, used = gen.memorization_bleu(
        model, tok, pairs, n=n, seed=opt.seed, max_new_tokens=opt.max_new_tokens, batch_size=opt.batch_size
    )
    # Memorisation is a diagnostic (over-fitting), so a higher BLEU is not "better".
    return [
        metric_row("witune:memorization", "bleu", bleu, None, higher=False),
        metric_row("witune:memorization", "n_prompts", used, None),
    ]


def make_judge(opt: EvalOptions):
    if not opt.judge:
        raise ValueError("witune:winrate needs a judge: --judge MODEL_DIR or --judge http://host:port")
    if opt.judge.startswith(("http://", "https://")):
        return OpenAIJudge(
            opt.judge, opt.judge_model, api_key=opt.judge_api_key, allow_insecure_http=opt.judge_allow_http
        )
    return LocalJudge.from_pretrained(opt.judge)


def winrate(model, tok, arg: str | None, opt: EvalOptions) -> list[MetricRow]:
    """Pairwise judge win rate of the model's outputs against a reference's (AlpacaEval style, both orders)."""
    refs = load_reference_outputs(arg or _alpaca_eval_file())[: opt.limit]
    prompts = [gen.format_prompt(tok, r["instruction"]) for r in refs]
    outs = gen.generate_greedy(model, tok, prompts, opt.max_new_tokens, opt.batch_size)
    data = default_data_dir()
    mt = data / "mt_bench" / "judge_prompts.jsonl" if data else None
    prompt = JudgePrompt.from_mt_bench(mt) if mt and mt.is_file() else JudgePrompt()
    wr = pairwise_win_rate(
        make_judge(opt), [r["instruction"] for r in refs], [g.text for g in outs], [r["output"] for r in refs], prompt
    )
    return [
        metric_row("witune:winrate", "win_rate", wr.win_rate, wr.stderr),
        metric_row("witune:winrate", "mean_tokens", *gen.mean_and_stderr([g.num_tokens for g in outs]), higher=False),
    ]


BUILTINS: dict[str, Evaluator] = {}
DIAGNOSTICS: dict[str, Diagnostics] = {}  # evaluator name -> which of its metrics are diagnostics


FILE_ARGUMENT: set[str] = set()  # evaluators whose argument (`witune:name=ARG`) is a data file
ARGUMENT_HINTS: dict[str, str] = {}  # evaluator name -> how its argument is written in help texts ("[=FILE]")


def register_evaluator(
    name: str,
    evaluator: Evaluator,
    diagnostics: Diagnostics | None = None,
    file_argument: bool = False,
    argument: str = "",
) -> None:
    """Make `witune:<name>` run ``evaluator(model, tokenizer, argument, options)``; `diagnostics` declares which
    of its metrics are diagnostics (none: every metric is a score); `file_argument`: the argument is a data file
    (checked to exist before a sweep trains anything); `argument`: its form for help texts, e.g. "[=FILE]". A
    name is registered once: silently replacing a built-in would change what a sweep's recorded task name means."""
    if not name or any(c in name for c in ":=,") or name != name.strip():
        raise ValueError(f"evaluator name {name!r}: non-empty, without spaces around it and without ':', '=' or ','")
    if name in BUILTINS:
        raise ValueError(f"evaluator witune:{name} is already registered")
    BUILTINS[name] = evaluator
    ARGUMENT_HINTS[name] = argument
    if file_argument:
        FILE_ARGUMENT.add(name)
    if diagnostics is not None:
        DIAGNOSTICS[name] = diagnostics


def builtin_usage() -> str:
    """Every registered evaluator as a help text writes it: "witune:generation=FILE, witune:winrate[=...]"."""
    return ", ".join(f"witune:{name}{ARGUMENT_HINTS[name]}" for name in BUILTINS)


def declared_diagnostics(task: str) -> Diagnostics | None:
    """The declaration of the evaluator behind a task name (`witune:name[=ARG]`, or the bare name as a results
    table may give it), or None."""
    return DIAGNOSTICS.get(task.removeprefix("witune:").partition("=")[0])


register_evaluator(
    "generation_length",
    generation_length,
    Diagnostics("answer length: neither better nor worse in itself", columns={"mean_tokens": "generation_length"}),
    file_argument=True,
    argument="[=FILE]",
)
register_evaluator("generation", generation_task, file_argument=True, argument="=FILE")
register_evaluator(
    "memorization",
    memorization,
    Diagnostics(
        "memorisation BLEU on training prompts, a mechanism diagnostic",
        columns={"bleu": "memorization_bleu"},
        details=("n_prompts",),
    ),
    file_argument=True,
    argument="=TRAIN_FILE",
)
register_evaluator(
    "winrate",
    winrate,
    Diagnostics("answer length of the win-rate generations", metrics=("mean_tokens",)),
    file_argument=True,
    argument="[=REFERENCE_JSON]",
)


def _robustness(model, tok, arg: str | None, opt: EvalOptions) -> list[MetricRow]:
    from witune.eval.robustness import robustness  # imported on use: the perturbation code is only needed here

    return robustness(model, tok, arg, opt)


register_evaluator(
    "robustness",
    _robustness,
    Diagnostics(
        "prompt-robustness spread, reported beside the scores",
        columns={"clean_acc": "robustness_clean_acc", "drop": "robustness_drop", "worst_acc": "robustness_worst_acc"},
        details=("*",),  # the per-perturbation breakdown stays in the database
    ),
    argument="[=BENCH:rate=R:shots=K:seeds=S:only=P+Q]",
)
