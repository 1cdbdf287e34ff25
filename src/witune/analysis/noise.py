"""Noise guard: is the best configuration better than conventional tuning (0, 1), or is its lead noise?

Min-max scaling (``aggregate.add_relative``) stretches any difference to [0, 1], so two runs 0.004 NLL apart
score 0 and 1 and the "best configuration" may be pure noise. This module compares the best configuration with
a reference on the *raw* scores, one benchmark at a time (each benchmark's primary metric, one vote each).

**With >= 2 seeds per compared configuration (a claim about training).** Each benchmark's seed-to-seed
variance is pooled over every configuration of the panel (model x dataset) that has >= 2 seeds: one-way
ANOVA's within-configuration mean square, with sum(n_c - 1) degrees of freedom. Two seeds give a variance with
one degree of freedom per configuration; pooling 16 of them gives 16, where a per-pair standard error from two
seeds has about 2 and a normal threshold on it names winners in a quarter of pure-noise sweeps. The difference
best - reference (oriented: positive favours the best) is divided by its standard error
s * sqrt(1/n_best + 1/n_ref) and compared with a **t quantile with those degrees of freedom**, one-sided at
5% Bonferroni-divided over the comparisons the best was picked from (K - 1 configurations against (0, 1), or
K (K - 1) / 2 pairs against the runner-up) times the m benchmarks. Every run is evaluated on the same test
items, so the item sampling is common to both means and cancels from the difference: this test is already
paired over items. The best is *better* when one benchmark clears the threshold and none goes against it by
more than the two-sided 5% t quantile.

**With one seed (no claim about training).** A score's ``stderr`` (lm-eval's, witune:score's) covers only the
sampling of test items, not training noise: one seed cannot say whether the setting or the luck of one training
run made the difference. The guard then compares the two *trained models* on the items (paired over the items
both were scored on when the item scores are given, ``items``: the per-item differences remove the items'
difficulty, which dominates an unpaired standard error; else the unpaired stderr), reports it, and never calls
the setting better: the verdict says that a training claim needs >= 2 seeds.

The reference is (0, 1) with the best's normalisation (else any (0, 1)); without a (0, 1) run it is the
runner-up by relative aggregate. When the best *is* (0, 1), there is nothing to guard. Calibration (false
winners in pure noise, power) is measured by ``tests/test_noise_guard.py`` and printed in docs/statistics.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from witune.analysis.aggregate import TASK
from witune.analysis.results import is_base

ALPHA = 0.05  # one-sided family-wise level of "better"
NO_ESTIMATE = "no noise estimate (one seed, no standard errors): the ranking is not evidence"
WITHIN = "within noise"
ONE_SEED = (
    "one seed: a claim about training needs >= 2 seeds per setting (an evaluation stderr covers only the test items)"
)
IS_IT = "is conventional tuning (0, 1)"
RULE = (
    "Noise guard: the best configuration is compared with conventional tuning (0, 1) (else the runner-up) on "
    "each benchmark's raw primary score. With >= 2 seeds: seed-to-seed variance pooled over the panel's "
    "configurations, t reference with the pooled degrees of freedom, one-sided 5% Bonferroni-divided over the "
    "configurations the best was picked from times the benchmarks; better only when one benchmark clears it and "
    "none goes against it beyond the two-sided 5% t quantile. With one seed: the two trained models are compared "
    "on the test items (paired where item scores are given), but no setting is called better."
)
COLUMNS = ["reference", "distinguishable", "threshold", "se_from", "seeds_compared", "df", "evidence"]


@dataclass
class _Cmp:
    """One benchmark's comparison of the best with the reference."""

    benchmark: str
    diff: float  # oriented: positive favours the best
    se: float
    df: float

    @property
    def t(self) -> float:
        if self.se > 0:
            return self.diff / self.se
        return 0.0 if self.diff == 0 else math.copysign(math.inf, self.diff)


def _oriented(df: pd.DataFrame) -> np.ndarray:
    return np.where(df["higher_is_better"].astype(bool), df["score"], -df["score"]).astype(float)


def _key(frame: pd.DataFrame) -> pd.Series:
    return (
        frame["prompt_weight"].astype(str) + "|" + frame["response_weight"].astype(str) + "|" + frame["normalization"]
    )


def _is_it(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(np.isclose(frame["prompt_weight"], 0) & np.isclose(frame["response_weight"], 1), index=frame.index)


def guard(rel: pd.DataFrame, agg: pd.DataFrame, best: pd.DataFrame, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """``best`` with the guard's columns (``COLUMNS``): the reference, ``distinguishable`` (the setting is better
    beyond noise: only ever with >= 2 seeds), the threshold, where the SE came from, seeds, df and the sentence."""
    tuned_rows = rel[~is_base(rel)].assign(_y=lambda d: _oriented(d), _key=lambda d: _key(d))
    tuned = agg[agg["prompt_weight"].notna()].assign(_key=lambda d: _key(d))
    rows = []
    for _, b in best.iterrows():
        panel = tuned[(tuned["model"] == b["model"]) & (tuned["dataset"] == b["dataset"])]
        runs = tuned_rows[(tuned_rows["model"] == b["model"]) & (tuned_rows["dataset"] == b["dataset"])]
        rows.append(_compare(b, panel, runs, items))
    return pd.concat([best, pd.DataFrame(rows, index=best.index, columns=COLUMNS)], axis=1)


def _reference(b: pd.Series, panel: pd.DataFrame) -> tuple[pd.Series | None, str, int]:
    """(reference row, its label, number of comparisons the best was picked from)."""
    k = len(panel)
    its = panel[_is_it(panel)]
    if len(its):
        same = its[its["normalization"] == b["normalization"]]
        return (same if len(same) else its).sort_values("relative", ascending=False).iloc[0], "(0, 1)", max(1, k - 1)
    others = panel[panel["_key"] != f"{b['prompt_weight']}|{b['response_weight']}|{b['normalization']}"]
    if others.empty:
        return None, "", 0
    ref = others.sort_values("relative", ascending=False).iloc[0]
    label = f"runner-up ({ref['prompt_weight']:g}, {ref['response_weight']:g})"
    return ref, label, max(1, k * (k - 1) // 2)


def _compare(b: pd.Series, panel: pd.DataFrame, runs: pd.DataFrame, items: pd.DataFrame | None) -> list:
    if bool(np.isclose(b["prompt_weight"], 0) and np.isclose(b["response_weight"], 1)):
        return ["(0, 1)", False, math.nan, "", 0, math.nan, IS_IT]
    ref, label, n_cmp = _reference(b, panel)
    if ref is None:
        return ["", False, math.nan, "", 0, math.nan, "only one configuration: nothing to compare with"]
    bkey = f"{b['prompt_weight']}|{b['response_weight']}|{b['normalization']}"
    mine, theirs = runs[runs["_key"] == bkey], runs[runs["_key"] == ref["_key"]]
    seeds = min(mine["seed"].nunique(), theirs["seed"].nunique())
    if seeds >= 2:
        cmps, se_from = _seed_comparisons(runs, mine, theirs), "seeds"
        m = max(1, len(cmps))
        dfs = [c.df for c in cmps] or [math.inf]
        threshold = float(stats.t.isf(ALPHA / (n_cmp * m), min(dfs))) if cmps else math.nan
        pooled = f"seed spread pooled over {runs['_key'].nunique()} configurations, {min(dfs):g} df"
        return _row(label, cmps, threshold, pooled, se_from, seeds, min(dfs), training=True)
    cmps, se_from = _item_comparisons(mine, theirs, items)
    if not cmps:
        return [label, False, math.nan, "", seeds, math.nan, NO_ESTIMATE]
    m = len(cmps)
    df = min(c.df for c in cmps)
    threshold = (
        float(stats.t.isf(ALPHA / (n_cmp * m), df)) if math.isfinite(df) else float(stats.norm.isf(ALPHA / (n_cmp * m)))
    )
    how = "paired over the items both were scored on" if se_from == "items (paired)" else "evaluation stderr, unpaired"
    return _row(label, cmps, threshold, how, se_from, seeds, df, training=False)


def _row(label, cmps, threshold, how, se_from, seeds, df, training: bool) -> list:
    if not cmps:
        return [label, False, math.nan, "", seeds, math.nan, NO_ESTIMATE]
    better, text = _verdict(cmps, threshold, label, how, training)
    return [label, better, threshold, se_from, seeds, df, text]


def _seed_comparisons(runs: pd.DataFrame, mine: pd.DataFrame, theirs: pd.DataFrame) -> list[_Cmp]:
    """Per benchmark: difference of seed means, SE from the pooled within-configuration variance (t df)."""
    out = []
    for task, part in runs.groupby(TASK, sort=True):
        per = part.groupby("_key")["_y"]
        n, var = per.size(), per.var(ddof=1)
        rep = n >= 2
        dof = float((n[rep] - 1).sum())
        if dof <= 0:
            continue
        pooled = float(((n[rep] - 1) * var[rep]).sum() / dof)
        a = mine[(mine["benchmark"] == task[0]) & (mine["metric"] == task[1])]["_y"]
        r = theirs[(theirs["benchmark"] == task[0]) & (theirs["metric"] == task[1])]["_y"]
        if len(a) == 0 or len(r) == 0:
            continue
        se = math.sqrt(pooled * (1 / len(a) + 1 / len(r)))
        out.append(_Cmp(task[0], float(a.mean() - r.mean()), se, dof))
    return out


def _item_comparisons(mine: pd.DataFrame, theirs: pd.DataFrame, items: pd.DataFrame | None) -> tuple[list[_Cmp], str]:
    """One seed: the two trained models on the test items, paired where item scores exist, else by stderr."""
    out, paired = [], False
    for task, a in mine.groupby(TASK, sort=True):
        r = theirs[(theirs["benchmark"] == task[0]) & (theirs["metric"] == task[1])]
        if r.empty:
            continue
        diff = float(a["_y"].mean() - r["_y"].mean())
        pair = _paired(a, r, items) if items is not None else None
        if pair is not None:
            out.append(_Cmp(task[0], diff, pair[0], pair[1]))
            paired = True
            continue
        if "stderr" not in a.columns or not (a["stderr"].notna().all() and r["stderr"].notna().all()):
            continue  # an unknown stderr on either side: no estimate from stderr
        se_a = math.sqrt(float((a["stderr"] ** 2).sum())) / len(a)
        se_r = math.sqrt(float((r["stderr"] ** 2).sum())) / len(r)
        se = math.sqrt(se_a**2 + se_r**2)
        if math.isfinite(se):
            out.append(_Cmp(task[0], diff, se, math.inf))
    return out, "items (paired)" if paired else "stderr"


def _paired(a: pd.DataFrame, r: pd.DataFrame, items: pd.DataFrame) -> tuple[float, float] | None:
    """(SE of the mean item difference, df) over the items both sides were scored on; None without items."""
    bench, metric = a["benchmark"].iloc[0], a["metric"].iloc[0]
    sel = items[(items["benchmark"] == bench) & (items["metric"] == metric)]
    left = sel[sel["run_id"].isin(a["run_id"])].groupby("item")["score"].mean()
    right = sel[sel["run_id"].isin(r["run_id"])].groupby("item")["score"].mean()
    d = (left - right).dropna()
    if len(d) < 2:
        return None
    return float(d.std(ddof=1) / math.sqrt(len(d))), float(len(d) - 1)


def _verdict(cmps: list[_Cmp], threshold: float, label: str, how: str, training: bool) -> tuple[bool, str]:
    z = [(c.t, c) for c in cmps]
    df = min(c.df for c in cmps)
    against_at = float(stats.t.isf(0.025, df)) if math.isfinite(df) else 1.96
    against = [(t, c) for t, c in z if t < -against_at]
    wins = sorted(((t, c) for t, c in z if t > threshold), key=lambda x: -x[0])
    head = "" if training else ONE_SEED + "; the trained models "
    if against:
        t, c = min(against, key=lambda x: x[0])
        text = f"worse by {abs(c.diff):.3g} ({abs(t):.1f} SE) on {c.benchmark}: not better than {label} ({how})"
        return False, (head + text) if head else text
    if not wins:
        t, c = max(z, key=lambda x: x[0])
        text = f"{WITHIN} (largest lead {c.diff:+.3g}, {t:.1f} SE on {c.benchmark}; needs > {threshold:.2g} SE; {how})"
        return False, head + text
    parts = [f"better by {c.diff:.3g} ({t:.1f} SE) on {c.benchmark}" for t, c in wins]
    text = "; ".join(parts) + f" (vs {label}, threshold {threshold:.2g} SE; {how})"
    if training:
        return True, text
    return False, head + "differ: " + text + "; run >= 2 seeds to tell whether the setting did it"
