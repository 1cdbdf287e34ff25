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
   folded into their benchmark (lm-eval's own group score when the results have it, else the plain mean of
   the subtasks), and each benchmark keeps one primary metric (``PRIMARY``, the papers' choices, each with
   its source). The subtask rows stay available for drill-down.
"""

from __future__ import annotations

import fnmatch
import re

import numpy as np
import pandas as pd

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

# Subtasks -> benchmark (regular expressions on the name without `witune_`); the group name itself is
# lm-eval's group row (e.g. `mmlu` carries the size-weighted group accuracy). TruthfulQA MC1/MC2 are one
# multiple-choice benchmark; TruthfulQA-Gen stays separate, as in the PLW paper's Table 2.
GROUPS: dict[str, str] = {
    "mmlu": r"mmlu(_.+)?",
    "bbh": r"bbh(_.+)?",
    "truthfulqa_mc": r"truthfulqa_mc[12]?",
    "arc_challenge": r"arc_challenge",
    "winogrande": r"winogrande",
    "piqa": r"piqa",
    "ifeval": r"ifeval",
}

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


def bare(name: str) -> str:
    """`witune_mmlu_anatomy` -> `mmlu_anatomy`: the local harness copies are the standard benchmarks."""
    return name.removeprefix("witune_")


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


def group_of(benchmark: str) -> str:
    """The benchmark a (sub)task belongs to; a name no group claims is its own benchmark."""
    b = bare(benchmark)
    for group, pattern in GROUPS.items():
        if re.fullmatch(pattern, b):
            return group
    return b


def role_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every (benchmark, metric) in the results with its role (score / diagnostic) and the reason."""
    pairs = df[["benchmark", "metric"]].drop_duplicates()
    rows = []
    for b, m in pairs.itertuples(index=False):
        why = diagnostic_reason(b, m)
        rows.append(
            {
                "benchmark": b,
                "metric": m,
                "group": group_of(b),
                "role": "diagnostic" if why else "score",
                "why": why or "",
            }
        )
    return pd.DataFrame(rows, columns=["benchmark", "metric", "group", "role", "why"])


def split_roles(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(score rows, diagnostic rows) of a results table."""
    diag = np.array([diagnostic_reason(b, m) is not None for b, m in zip(df["benchmark"], df["metric"])], dtype=bool)
    return df[~diag].copy(), df[diag].copy()


def choose_primary(scores: pd.DataFrame, primary: dict[str, str] | None = None) -> dict[str, str]:
    """The metric each benchmark votes with: the user's choice, else ``PRIMARY``, else ``FALLBACK``."""
    primary = primary or {}
    grouped = scores.assign(group=scores["benchmark"].map(group_of))
    out = {}
    for group, part in grouped.groupby("group"):
        have = set(part["metric"])
        candidates = ((primary[group],) if group in primary else ()) + PRIMARY.get(group, ((), None))[0] + FALLBACK
        out[group] = next((m for m in candidates if m in have), min(have))
    return out


def one_vote(df: pd.DataFrame, primary: dict[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(benchmark rows, subtask rows) from the score rows of a results table.

    Benchmark rows: one per run x benchmark, ``benchmark`` = the group, ``metric`` = its primary metric,
    ``n_subtasks`` = how many subtask scores went into it (0 when lm-eval's group row was used). Diagnostic
    rows must be split off first (``split_roles``); any left here raise, because they must never vote.
    Subtask rows: every score row with its ``group``, for drill-down.
    """
    leftover = [(b, m) for b, m in zip(df["benchmark"], df["metric"]) if diagnostic_reason(b, m)]
    if leftover:
        raise ValueError(f"diagnostics passed to one_vote: {sorted(set(leftover))[:3]}")
    subtasks = df.assign(group=df["benchmark"].map(group_of), benchmark=df["benchmark"].map(bare))
    chosen = choose_primary(subtasks, primary)
    sel = subtasks[subtasks["metric"] == subtasks["group"].map(chosen)]
    parts = []
    for group, part in sel.groupby("group", sort=True):
        member = PRIMARY.get(group, ((), None))[1]
        own = part[part["benchmark"] == (member or group)]  # lm-eval's group row or the chosen member
        if len(own):
            parts.append(own.assign(benchmark=group, n_subtasks=0))
        part = part[~part["run_id"].isin(own["run_id"])]  # runs without that row: mean of their subtasks
        if part.empty:
            continue
        keys = [c for c in part.columns if c not in ("benchmark", "score", "higher_is_better", "stderr")]
        mean = (
            part.groupby(["run_id", "metric"], sort=False)
            .agg(score=("score", "mean"), higher_is_better=("higher_is_better", "first"), n_subtasks=("score", "size"))
            .reset_index()
        )
        if "stderr" in part.columns:  # SE of a mean of independent subtask scores; NaN if any is unknown
            se2 = part.assign(_se2=part["stderr"] ** 2).groupby(["run_id", "metric"], sort=False)["_se2"]
            mean = mean.merge(
                np.sqrt(se2.sum(min_count=1).where(se2.count() == se2.size())).rename("stderr").reset_index(),
                on=["run_id", "metric"],
            )
            mean["stderr"] = mean["stderr"] / mean["n_subtasks"]
        first = part.drop_duplicates("run_id")[[c for c in keys if c not in ("metric",)]]
        parts.append(first.merge(mean, on="run_id").assign(benchmark=group))
    if not parts:
        return subtasks.iloc[0:0].assign(n_subtasks=0).drop(columns="group"), subtasks
    out = pd.concat(parts, ignore_index=True).drop(columns="group", errors="ignore")
    cols = list(df.columns) + ["n_subtasks"]
    return out[[c for c in cols if c in out.columns]].reset_index(drop=True), subtasks.reset_index(drop=True)


def diagnostics_wide(diag: pd.DataFrame) -> pd.DataFrame:
    """Diagnostic rows as one column per ``benchmark:metric``, one row per run (for the diagnostics table)."""
    if diag.empty:
        return pd.DataFrame(columns=["run_id"])
    d = diag.assign(name=diag["benchmark"].map(bare) + ":" + diag["metric"])
    return d.pivot_table(index="run_id", columns="name", values="score", aggfunc="mean").reset_index()
