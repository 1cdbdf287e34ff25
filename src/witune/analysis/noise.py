"""Noise guard: is the best configuration better than conventional tuning (0, 1), or is its lead noise?

Min-max scaling (``aggregate.add_relative``) stretches any difference to [0, 1], so two runs 0.004 NLL
apart score 0 and 1 and the "best configuration" may be pure noise. This module compares the best
configuration with a reference on the *raw* scores, one benchmark at a time (each benchmark's primary
metric, one vote per benchmark), against their standard errors.

Standard error of a configuration's score on a benchmark (its mean over seeds):

* >= 2 seeds: the seed-to-seed spread, sd / sqrt(n_seeds) (it already holds the evaluation noise);
* one seed: the evaluation's own ``stderr`` (lm-eval's, or witune:score's), sqrt(sum se^2) / n when
  several runs are averaged;
* neither: unknown (NaN).

Rule (stated in the report): the difference best - reference is oriented so that positive favours the best
(lower-is-better metrics flipped), with SE sqrt(se_best^2 + se_ref^2). The best is *distinguishable* when
at least one benchmark favours it by more than ``z*`` SE and no benchmark goes against it by more than 2 SE.
``z*`` is 2, raised by a Bonferroni correction (one-sided 2.5% over the K candidate configurations the best
was picked from times the m benchmarks compared) because picking the best of many noisy configurations and
then testing it on many benchmarks would otherwise find a "winner" in pure noise. Benchmarks without an SE
do not vote; when none has one the answer is "no noise estimate": the ranking is not evidence.

The reference is (0, 1) with the best's normalisation (else any (0, 1)); without a (0, 1) run it is the
runner-up by relative aggregate. When the best *is* (0, 1), there is nothing to guard.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import norm

from witune.analysis.aggregate import CONFIG, TASK
from witune.analysis.results import is_base

NO_ESTIMATE = "no noise estimate (one seed, no standard errors): the ranking is not evidence"
WITHIN = "within noise"
RULE = (
    "Noise guard: the best configuration is compared with conventional tuning (0, 1) (else the runner-up) "
    "on each benchmark's raw primary score; SE from the seed-to-seed spread (>= 2 seeds) or the "
    "evaluation's standard errors. It counts as better only when at least one benchmark favours it by more "
    "than z* SE (z* = 2, Bonferroni-raised for picking the best of K configurations on m benchmarks) and no "
    'benchmark goes against it by more than 2 SE; otherwise "within noise".'
)


def cell_scores(rel: pd.DataFrame) -> pd.DataFrame:
    """Per configuration x benchmark: mean raw score over seeds, ``n_seeds`` and its standard error ``se``."""
    df = rel[~is_base(rel)]
    if "stderr" not in df.columns:
        df = df.assign(stderr=np.nan)
    df = df.assign(_se2=df["stderr"] ** 2)
    g = df.groupby(CONFIG + TASK, dropna=False)
    out = g.agg(
        score=("score", "mean"),
        sd=("score", "std"),
        n=("score", "size"),
        n_seeds=("seed", "nunique"),
        se2_sum=("_se2", lambda s: s.sum(min_count=len(s))),
        higher_is_better=("higher_is_better", "first"),
    ).reset_index()
    seed_se = out["sd"] / np.sqrt(out["n"])
    eval_se = np.sqrt(out["se2_sum"]) / out["n"]  # NaN when any run lacks a stderr
    out["se"] = np.where(out["n_seeds"] >= 2, seed_se, eval_se)
    out["se_from"] = np.where(out["n_seeds"] >= 2, "seeds", np.where(out["se"].notna(), "stderr", ""))
    return out.drop(columns=["sd", "se2_sum"])


def _is_it(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(np.isclose(frame["prompt_weight"], 0) & np.isclose(frame["response_weight"], 1), index=frame.index)


def _w(x: float) -> str:
    return f"{x:g}"


def guard(rel: pd.DataFrame, agg: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """``best`` with the noise guard's columns: ``reference`` (the configuration compared with),
    ``distinguishable`` (bool), ``z_threshold`` and ``evidence`` (the sentence for the table)."""
    cells = cell_scores(rel)
    tuned = agg[agg["prompt_weight"].notna()]
    rows = []
    for _, b in best.iterrows():
        panel = tuned[(tuned["model"] == b["model"]) & (tuned["dataset"] == b["dataset"])]
        rows.append(_compare(b, panel, cells))
    extra = pd.DataFrame(rows, index=best.index, columns=["reference", "distinguishable", "z_threshold", "evidence"])
    return pd.concat([best, extra], axis=1)


def _compare(b: pd.Series, panel: pd.DataFrame, cells: pd.DataFrame) -> tuple:
    def key(r: pd.Series) -> tuple:
        return (r["prompt_weight"], r["response_weight"], r["normalization"])

    if bool(np.isclose(b["prompt_weight"], 0) and np.isclose(b["response_weight"], 1)):
        return "(0, 1)", False, math.nan, "is conventional tuning (0, 1)"
    its = panel[_is_it(panel)]
    if len(its):
        same = its[its["normalization"] == b["normalization"]]
        ref = (same if len(same) else its).sort_values("relative", ascending=False).iloc[0]
        label = "(0, 1)"
    else:
        others = panel[[key(r) != key(b) for _, r in panel.iterrows()]]
        if others.empty:
            return "", False, math.nan, "only one configuration: nothing to compare with"
        ref = others.sort_values("relative", ascending=False).iloc[0]
        label = f"runner-up ({_w(ref['prompt_weight'])}, {_w(ref['response_weight'])})"
    mine = cells[(cells["model"] == b["model"]) & (cells["dataset"] == b["dataset"])]

    def pick(r: pd.Series) -> pd.DataFrame:
        return mine[[key(x) == key(r) for _, x in mine.iterrows()]]

    both = pick(b).merge(pick(ref), on=TASK, suffixes=("_b", "_r"))
    sign = np.where(both["higher_is_better_b"].astype(bool), 1.0, -1.0)
    both["diff"] = sign * (both["score_b"] - both["score_r"])
    both["se"] = np.sqrt(both["se_b"] ** 2 + both["se_r"] ** 2)
    have = both[both["se"].notna()]
    if have.empty:
        return label, False, math.nan, NO_ESTIMATE
    n_candidates = max(1, len(panel) - 1)  # the best was picked from every configuration but the reference
    z_star = max(2.0, float(norm.isf(0.025 / (n_candidates * len(have)))))
    with np.errstate(divide="ignore", invalid="ignore"):
        # SE 0 (identical seeds, a saturated accuracy): any non-zero difference is certain, none is no lead
        z = np.where(
            have["se"] > 0, have["diff"] / have["se"], np.where(have["diff"] == 0, 0.0, np.sign(have["diff"]) * np.inf)
        )
    have = have.assign(z=z)
    skipped = len(both) - len(have)
    tail = f" ({skipped} benchmark(s) without SE not counted)" if skipped else ""
    against = have[have["z"] < -2]
    if len(against):
        w = against.sort_values("z").iloc[0]
        text = f"worse by {abs(w['diff']):.3g} ({abs(w['z']):.1f} SE) on {w['benchmark']}: not better than {label}"
        return label, False, z_star, text + tail
    wins = have[have["z"] > z_star]
    if wins.empty:
        top = have.sort_values("z", ascending=False).iloc[0]
        text = f"{WITHIN} (largest lead {top['diff']:+.3g}, {top['z']:.1f} SE on {top['benchmark']}; "
        return label, False, z_star, text + f"needs > {z_star:.2g} SE){tail}"
    parts = [
        f"better by {w['diff']:.3g} ({w['z']:.1f} SE) on {w['benchmark']}"
        for _, w in wins.sort_values("z", ascending=False).iterrows()
    ]
    return label, True, z_star, "; ".join(parts) + f" (vs {label}, threshold {z_star:.2g} SE){tail}"
