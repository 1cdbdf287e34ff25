"""Which results are scores, which are diagnostics, and one row (one vote) per benchmark.

Two rules keep the aggregates honest:

1. **Diagnostics never vote.** A diagnostic describes *how* a model was trained (its prompt NLL, the
   distance it moved, how long its answers are, how much training data it reproduces, how noisy its loss
   was), not how good it is. The prompt NLL in particular is what a weighted run is trained to lower, so
   counting it as a score makes prompt weighting win by construction. An evaluator declares its diagnostics
   when it is registered (``witune.eval.register_evaluator``); ``ROLES`` adds the generic ones (metric names
   any evaluation may report); everything neither names is a score. Held-out *response* NLL is a score
   (lower is better): it measures the answers, which every configuration is trained to produce.
2. **One benchmark, one vote.** lm-eval reports MMLU as ~58 subtasks, BBH as ~27, IFEval with 4 metrics
   and ARC with 2. Counted as separate tasks, MMLU alone would outvote every other benchmark. Subtasks are
   folded into their benchmark (``witune.analysis.groups``: lm-eval's own group structure where the results
   carry it, else inferred from the group rows, else the user's mapping), and each benchmark keeps one primary
   metric (``PRIMARY``, the papers' choices, each with its source). The subtask rows stay for drill-down.
"""

from __future__ import annotations

import fnmatch

import pandas as pd

from witune.analysis.groups import bare, structure
from witune.analysis.groups import fold as group_fold

# (benchmark pattern, metric pattern, why it is a diagnostic); fnmatch patterns, first match wins.
# Benchmark names are compared without the `witune_` prefix of the local harness copies.
ROLES: list[tuple[str, str, str]] = [
    ("*", "prompt_nll*", "prompt NLL: weighted runs are trained to lower it (tautological as a score)"),
    ("*", "weighted_nll*", "weighted NLL: depends on the weights being compared"),
    ("*", "*loss_rsd*", "training-loss stability, a training diagnostic"),
    ("*", "mean_rsd", "training-loss stability, a training diagnostic"),
    ("*", "n_prompts", "bookkeeping count"),
    ("weight_distance*", "*", "distance moved from the base weights, a mechanism diagnostic"),
]
# Held-out response NLL ("heldout:response_nll", "witune:score:response_nll_per_token") is a score:
# no rule above matches it, so it votes as one lower-is-better benchmark.

# Primary metric per benchmark: candidates in order (the first one the results have wins), and the
# subtask that stands for the benchmark when it is not a plain group mean.
# Sources: the PLW paper evaluated ARC, TruthfulQA-MC2 and WinoGrande "to match the HuggingFace Open LLM
# leaderboard" ("Instruction Fine-Tuning: Does Prompt Loss Matter?", appendix C.2), which reports ARC as acc_norm, TruthfulQA as mc2 and WinoGrande
# as acc; PIQA as acc_norm (lm-eval's headline for it). The WIT paper reports MMLU accuracy and BBH
# exact match (CoT, answer extracted: lm-eval's `get-answer` filter) and IFEval accuracy; for IFEval we
# take prompt-level loose accuracy, the headline of the Open-Instruct/Tülu suite the WIT authors follow.
PRIMARY: dict[str, tuple[tuple[str, ...], str | None]] = {
    "arc_challenge": (("acc_norm", "acc"), None),
    "arc_easy": (("acc_norm", "acc"), None),
    "hellaswag": (("acc_norm", "acc"), None),
    "piqa": (("acc_norm", "acc"), None),
    "winogrande": (("acc",), None),
    "truthfulqa_mc": (("acc",), "truthfulqa_mc2"),
    "mmlu": (("acc",), None),
    "bbh": (("exact_match (get-answer)", "exact_match"), None),
    "ifeval": (("prompt_level_loose_acc", "prompt_level_strict_acc"), None),
    "heldout": (("response_nll", "response_nll_per_token"), None),
}
# For benchmarks the table does not name: the first of these the results have, else the alphabetically first.
FALLBACK = ("acc_norm", "acc", "exact_match", "response_nll", "response_nll_per_token", "win_rate", "bleu")


def diagnostic_reason(benchmark: str, metric: str) -> str | None:
    """Why (benchmark, metric) is a diagnostic, or None when it is a score."""
    from witune.eval import declared_diagnostics

    declared = declared_diagnostics(benchmark)
    if declared is not None and declared.role(metric)[0] != "score":
        return declared.why
    b = bare(benchmark)
    for bpat, mpat, why in ROLES:
        if fnmatch.fnmatchcase(b, bpat) and fnmatch.fnmatchcase(metric, mpat):
            return why
    return None


def _tasks(df: pd.DataFrame, groups: dict[str, str] | None = None) -> pd.DataFrame:
    """``df`` with ``task`` (the bare name), ``group`` (its benchmark) and ``is_group`` (a group row)."""
    data = df.assign(task=df["benchmark"].map(bare))
    info = structure(data, groups).set_index("task")
    return data.assign(group=data["task"].map(info["benchmark"]), is_group=data["task"].map(info["is_group"]))


def role_table(df: pd.DataFrame, groups: dict[str, str] | None = None) -> pd.DataFrame:
    """Every (benchmark, metric) in the results with its benchmark group, role (score / diagnostic), reason."""
    pairs = df[["benchmark", "metric"]].drop_duplicates()
    grouped = _tasks(pairs.assign(run_id=""), groups)
    why = [diagnostic_reason(b, m) for b, m in zip(pairs["benchmark"], pairs["metric"])]
    out = pd.DataFrame(
        {
            "benchmark": pairs["benchmark"].to_numpy(),
            "metric": pairs["metric"].to_numpy(),
            "group": grouped["group"].to_numpy(),
            "role": ["diagnostic" if w else "score" for w in why],
            "why": [w or "" for w in why],
        }
    )
    return out.reset_index(drop=True)


def split_roles(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(score rows, diagnostic rows) of a results table (the reason is looked up once per distinct pair)."""
    pairs = df[["benchmark", "metric"]].drop_duplicates()
    reasons = {(b, m): diagnostic_reason(b, m) is not None for b, m in zip(pairs["benchmark"], pairs["metric"])}
    diag = pd.Series(list(zip(df["benchmark"], df["metric"])), index=df.index).map(reasons).astype(bool)
    return df[~diag].copy(), df[diag].copy()


def choose_primary(scores: pd.DataFrame, primary: dict[str, str] | None = None) -> dict[str, str]:
    """The metric each benchmark (column ``group``) votes with: the user's choice, else ``PRIMARY``, else
    ``FALLBACK``, else the alphabetically first."""
    primary = primary or {}
    out = {}
    for group, have in scores.groupby("group")["metric"].agg(set).items():
        candidates = ((primary[group],) if group in primary else ()) + PRIMARY.get(group, ((), None))[0] + FALLBACK
        out[group] = next((m for m in candidates if m in have), min(have))
    return out


def fold(
    df: pd.DataFrame, primary: dict[str, str] | None = None, groups: dict[str, str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(benchmark rows, subtask rows, notes) from the score rows of a results table.

    Benchmark rows: one per run x benchmark, ``benchmark`` = the benchmark, ``metric`` = its primary metric,
    ``n_subtasks`` = how many subtask scores went into it (0 when lm-eval's group row was used). Diagnostic
    rows must be split off first (``split_roles``); any left here raise, because they must never vote.
    Subtask rows: every score row with its ``group``, for drill-down.
    """
    pairs = df[["benchmark", "metric"]].drop_duplicates()
    leftover = [(b, m) for b, m in zip(pairs["benchmark"], pairs["metric"]) if diagnostic_reason(b, m)]
    if leftover:
        raise ValueError(f"diagnostics passed to one_vote: {sorted(set(leftover))[:3]}")
    subtasks = _tasks(df, groups)
    chosen = choose_primary(subtasks, primary)
    stand_in = {g: m for g, (_, m) in PRIMARY.items() if m}
    bench, notes = group_fold(subtasks, chosen, stand_in)
    cols = [c for c in df.columns if c not in ("parent", "n_items", "weight_by_size")] + ["n_subtasks"]
    bench = bench[[c for c in cols if c in bench.columns]].reset_index(drop=True)
    subtasks = subtasks.assign(benchmark=subtasks["task"]).drop(columns=["task", "is_group"])
    return bench, subtasks.reset_index(drop=True), notes


def one_vote(
    df: pd.DataFrame, primary: dict[str, str] | None = None, groups: dict[str, str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(benchmark rows, subtask rows): ``fold`` without its notes."""
    bench, subtasks, _ = fold(df, primary, groups)
    return bench, subtasks


def diagnostics_wide(diag: pd.DataFrame) -> pd.DataFrame:
    """Diagnostic rows as one column per ``benchmark:metric``, one row per run (for the diagnostics table)."""
    if diag.empty:
        return pd.DataFrame(columns=["run_id"])
    d = diag.assign(name=diag["benchmark"].map(bare) + ":" + diag["metric"])
    return d.pivot_table(index="run_id", columns="name", values="score", aggfunc="mean").reset_index()
