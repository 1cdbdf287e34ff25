"""Which tasks form one benchmark (one vote), and the one score each run gets for it.

Where the structure comes from, first match wins:

1. **The user's mapping** (``groups``: task name or fnmatch pattern -> benchmark; ``--group`` on the CLI).
2. **lm-eval itself**: a sweep that ran lm-eval stores each task's parent group (the results' ``group_subtasks``),
   its item count and each group's ``weight_by_size`` (columns ``parent``, ``n_items``, ``weight_by_size``). A
   task's benchmark is its topmost ancestor that is not a *suite*: a group whose leaf tasks share no metric (the
   Open LLM Leaderboard's ``leaderboard`` group holds BBH, MATH, IFEval, ...: each of those is one benchmark).
3. **Inference, for a CSV without that**: a task belongs to the longest name that prefixes it (``name_...``),
   among the group rows of the results and the known benchmark families (``FAMILIES``: lm-eval's own names,
   so ``mmlu_pro_*`` is never folded into ``mmlu``); the known category rows (``mmlu_stem``, ...) are groups,
   never subtasks.

One score per run and benchmark, the same estimand for every run (never a mix within one min-max group): the
group row's score (lm-eval's own aggregate, with its ``weight_by_size``) when every run has it; else the mean of
the leaf tasks for every run, weighted by item counts where lm-eval weights by size and the counts are known
(a plain mean otherwise, said in a note); where some runs have only the group row and others only the
subtasks, the two are different benchmarks (``B`` and ``B (subtask mean)``), said in a note.
"""

from __future__ import annotations

import fnmatch

import numpy as np
import pandas as pd

# lm-eval benchmark families whose names prefix each other: each is its own benchmark (longest match wins).
FAMILIES = (
    "leaderboard_bbh",
    "leaderboard_gpqa",
    "leaderboard_math_hard",
    "leaderboard_musr",
    "leaderboard_mmlu_pro",
    "leaderboard_ifeval",
    "mmlu_pro_plus",
    "mmlu_pro",
    "mmlu_prox",
    "mmlu_redux",
    "mmlusr",
    "mmlu",
    "bbh_cot_fewshot",
    "bbh_cot_zeroshot",
    "bbh_fewshot",
    "bbh_zeroshot",
    "bbh",
)
# Group rows that are categories inside a family, not subtasks (lm-eval's MMLU categories).
CATEGORY_ROWS = {"mmlu_stem", "mmlu_humanities", "mmlu_social_sciences", "mmlu_other"}
# Tasks that lm-eval keeps apart but the PLW paper scores as one benchmark (TruthfulQA MC1/MC2: MC2 stands for it).
ALIASES = {"truthfulqa_mc1": "truthfulqa_mc", "truthfulqa_mc2": "truthfulqa_mc"}
# lm-eval's aggregation of the families witune knows, where the results do not carry it (their YAMLs).
WEIGHT_BY_SIZE = {"mmlu": True, "bbh": True, "leaderboard_bbh": True, "leaderboard_musr": True}
SUBTASK_MEAN = " (subtask mean)"


def bare(name: str) -> str:
    """`witune_mmlu_anatomy` -> `mmlu_anatomy`: the local harness copies are the standard benchmarks."""
    return name.removeprefix("witune_")


def _first(df: pd.DataFrame, col: str) -> dict[str, object]:
    if col not in df.columns:
        return {}
    have = df[df[col].notna() & (df[col].astype(str) != "")]
    return have.groupby("task", sort=False)[col].first().to_dict()


def structure(df: pd.DataFrame, groups: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per task: ``task``, ``benchmark``, ``is_group`` (a group row, not a leaf), ``source``."""
    tasks = sorted(df["task"].unique())
    parents = {t: bare(str(p)) for t, p in _first(df, "parent").items()}
    metrics = df.groupby("task")["metric"].agg(frozenset).to_dict()
    present = set(tasks)
    rows = []
    children: dict[str, list[str]] = {}
    for t, p in parents.items():
        children.setdefault(p, []).append(t)
    for t in tasks:
        user = _user(t, groups or {})
        if user is not None:
            rows.append((t, user, t in children or t in CATEGORY_ROWS, "your mapping"))
        elif t in parents or t in children:
            rows.append((t, _lm_eval_benchmark(t, parents, children, metrics), t in children, "lm-eval"))
        else:
            bench = _inferred(t, present)
            is_group = t in CATEGORY_ROWS or any(o.startswith(t + "_") for o in present if o != t)
            rows.append((t, bench, is_group, "inferred" if bench != t or is_group else "own"))
    return pd.DataFrame(rows, columns=["task", "benchmark", "is_group", "source"])


def _user(task: str, groups: dict[str, str]) -> str | None:
    if task in groups:
        return groups[task]
    return next((b for pat, b in groups.items() if fnmatch.fnmatchcase(task, pat)), None)


def _leaves(g: str, children: dict[str, list[str]]) -> list[str]:
    out, todo, seen = [], [g], set()
    while todo:
        x = todo.pop()
        if x in seen:
            continue
        seen.add(x)
        kids = children.get(x, [])
        if kids:
            todo.extend(kids)
        elif x != g:
            out.append(x)
    return out


def _lm_eval_benchmark(t: str, parents: dict[str, str], children: dict[str, list[str]], metrics) -> str:
    chain = [t]
    while chain[-1] in parents and parents[chain[-1]] not in chain and parents[chain[-1]]:
        chain.append(parents[chain[-1]])
    for g in reversed(chain):  # topmost first: the first group that is not a suite is the benchmark
        leaves = _leaves(g, children) or [g]
        common = frozenset.intersection(*[metrics.get(x, frozenset()) for x in leaves])
        if common or g == t:
            return ALIASES.get(g, g)
    return t


def _inferred(t: str, present: set[str]) -> str:
    if t in ALIASES:
        return ALIASES[t]
    candidates = [f for f in FAMILIES if t == f or t.startswith(f + "_")]
    candidates += [g for g in present if g != t and t.startswith(g + "_")]
    return max(candidates, key=len) if candidates else t


def fold(df: pd.DataFrame, chosen: dict[str, str], stand_in: dict[str, str]) -> tuple[pd.DataFrame, list[str]]:
    """One row per run x benchmark on its primary metric (``chosen``), with ``n_subtasks``; and the notes.

    ``df`` has ``task`` (bare name), ``group`` (its benchmark) and ``is_group``; ``stand_in`` names the task that
    stands for a benchmark where it is not the benchmark's own name (TruthfulQA: ``truthfulqa_mc2``).
    """
    notes: list[str] = []
    sel = df[df["metric"] == df["group"].map(chosen)]
    parts = []
    for bench, part in sel.groupby("group", sort=True):
        own_name = stand_in.get(bench, bench)
        own = part[part["task"] == own_name]
        leaves = part[~part["is_group"] & (part["task"] != own_name)]
        if leaves.empty and len(own) < len(part):  # only category rows below the benchmark: they stand in
            leaves = part[part["task"] != own_name]
            notes.append(f"{bench}: no subtask rows, only category rows: the benchmark is their mean")
        runs = part["run_id"].unique()
        with_own = set(own["run_id"])
        with_leaves = set(leaves["run_id"])
        if len(own) and with_own >= set(runs):
            parts.append(own.assign(benchmark=bench, n_subtasks=0))
            continue
        if len(leaves) and with_leaves >= set(runs):
            mean, note = _leaf_mean(leaves, bench, part)
            parts.append(mean)
            if own.empty and note:
                notes.append(note)
            elif len(own):
                notes.append(
                    f"{bench}: lm-eval's group row is missing for some runs, so every run gets the mean of its "
                    "subtasks (one estimand for all)" + (f"; {note}" if note else "")
                )
            continue
        # Some runs have only the group row, others only subtasks: two estimands, two benchmarks.
        parts.append(own.assign(benchmark=bench, n_subtasks=0))
        rest = leaves[~leaves["run_id"].isin(with_own)]
        if len(rest):
            mean, _ = _leaf_mean(rest, bench + SUBTASK_MEAN, part)
            parts.append(mean)
            notes.append(
                f"{bench}: {len(with_own)} run(s) have lm-eval's group score and {rest['run_id'].nunique()} only "
                f"subtasks: compared as two benchmarks ({bench!r}, {bench + SUBTASK_MEAN!r}), never mixed"
            )
    if not parts:
        return df.iloc[0:0].assign(n_subtasks=0), notes
    return pd.concat(parts, ignore_index=True), notes


def _leaf_mean(leaves: pd.DataFrame, bench: str, part: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Mean of the leaf tasks per run (size-weighted where lm-eval weights by size and counts are known)."""
    weighted = _weight_by_size(bench, part)
    counts = leaves["n_items"] if "n_items" in leaves.columns else pd.Series(np.nan, index=leaves.index)
    use_sizes = weighted and bool(counts.notna().all()) and bool((counts > 0).all())
    w = counts.astype(float) if use_sizes else pd.Series(1.0, index=leaves.index)
    data = leaves.assign(_w=w, _wy=w * leaves["score"])
    keys = ["run_id", "metric"]
    g = data.groupby(keys, sort=False)
    out = g.agg(_wy=("_wy", "sum"), _w=("_w", "sum"), higher_is_better=("higher_is_better", "first"))
    out["score"] = out["_wy"] / out["_w"]
    out["n_subtasks"] = g.size()
    if "stderr" in data.columns:  # SE of a weighted mean of independent subtask scores; NaN if any is unknown
        se = data.assign(_v=(data["_w"] * data["stderr"]) ** 2).groupby(keys, sort=False)["_v"]
        out["stderr"] = np.sqrt(se.sum(min_count=1).where(se.count() == se.size())) / out["_w"]
    out = out.drop(columns=["_wy", "_w"]).reset_index()
    drop = ["benchmark", "score", "higher_is_better", "stderr", "metric", "n_items", "parent", "weight_by_size"]
    first = leaves.drop_duplicates("run_id")[[c for c in leaves.columns if c not in drop]]
    note = ""
    if weighted and not use_sizes:
        note = (
            f"{bench}: lm-eval weights its subtasks by size, but their item counts are unknown: plain mean of "
            "the subtasks (the same for every run, but not lm-eval's number)"
        )
    return first.merge(out, on="run_id").assign(benchmark=bench), note


def _weight_by_size(bench: str, part: pd.DataFrame) -> bool:
    if "weight_by_size" in part.columns:
        own = part.loc[part["task"] == bench, "weight_by_size"].dropna()
        own = own[own.astype(str) != ""]
        if len(own):
            return str(own.iloc[0]).strip().lower() in ("true", "1", "1.0")
    return WEIGHT_BY_SIZE.get(bench, False)
