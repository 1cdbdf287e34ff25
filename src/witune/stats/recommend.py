"""Recommend prompt/response loss weights from a data set's Rg and prompt characteristics, with sources.

Sources (texts in shared/seeds/):
- PLW paper (Huerta-Enochian & Ko, "Instruction Fine-Tuning: Does Prompt Loss Matter?"), Appendix B, Table 4:
  optimal PLW per Rg from the GAM ratio-PLW interaction for "All", "MC" (multiple-choice) and "Gen"
  (TruthfulQA-Gen, AlpacaEval 1, PandaLM) benchmarks. A ``*`` marks rows where
  "the difference between the maximum and minimum predicted values at this ratio is less than 5% of the score
  range", i.e. the weight barely matters there.
- PLW paper, Sec. 5.2: regression critical value PLW = 0.242 for short-completion data (AlpacaDataShort, Rg 0.082);
  Sec. 6: "PLW = 0.155 for small completion-prompt length ratios (Rg <= 1) and up to PLW = 0.278 for Rg = 1.5".
  (0.278 at Rg 1.5 is Table 4's MC column; its All column says 0.183 there. witune follows the table, column by
  column.)
- WIT paper (Chatterjee, Renduchintala et al., "On the Effect of Instruction Tuning Loss on Generalization",
  TACL; its blog post's "Key Observations" and "Some Hints for Future Research"): the best lambda_p is
  low-to-moderate (0-0.6) in 61 of 75 (model, data, benchmark) combinations; the mean optimal lambda_p ranges from
  0.20 (Llama-3-3B) to 0.42 (Gemma-2-2B) over models and from 0.17 (BBH) to 0.48 (IFEval) over benchmarks.
  lambda_r = 1 is optimal in only 18 of 75 combinations, 0.4-1 in 55 of 75 (73%); conversation benchmarks
  (AlpacaEval, MT-Bench) prefer lambda_r >= 0.6 in 18 of 30, IFEval lambda_r <= 0.4 in 9 of 15.
  The optimal lambda_p correlates positively with the generation ratio and the prompts' average log-probability,
  negatively with prompt length, n-gram diversity and parse depth. The text gives the *signs* only (the
  coefficients are in an image, Figure "correlation table"), over 3 fine-tuning datasets.

How the evidence becomes one continuous answer (``plw_curve``):
- Each column is a piecewise-linear curve through its anchors: Table 4's rows, where a starred row contributes
  PLW 0 ("keep masking: the weight does not matter here", the default nobody needs to change), plus, for the "all"
  column only, the regression's 0.242 at the Rg where it was measured (0.082). Outside the anchors the curve is
  flat. There is no branch at Rg = 1, so the answer moves by at most ``MAX_SLOPE`` per unit of Rg everywhere
  (tested on a fine grid): no jumps.
- ``matters`` (how strongly the paper found an effect) is interpolated the same way (1 unstarred, 0 starred).
- The WIT pair: lambda_r from the WIT shares per benchmark type; lambda_p = PLW * lambda_r where the PLW matters
  (the gradient direction depends only on lambda_p / lambda_r, so the PLW paper's ratio carries over), blended
  continuously towards WIT's central lambda_p (0.31) where the PLW paper found no effect but WIT still found gains.
- The WIT data features do not move the numbers: the paper gives no sizes (see above). They are reported with
  their direction only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from witune.errors import ConfigError

# (Rg, {column: (optimal PLW, starred)}), copied from the PLW paper's Table 4 ("Does Prompt Loss Matter?", Appendix B).
TABLE4: list[tuple[float, dict[str, tuple[float, bool]]]] = [
    (0.5, {"all": (0.155, False), "mc": (0.155, False), "gen": (0.292, True)}),
    (1.0, {"all": (0.155, False), "mc": (0.183, False), "gen": (0.321, True)}),
    (1.5, {"all": (0.183, False), "mc": (0.278, False), "gen": (0.385, True)}),
    (2.0, {"all": (0.239, False), "mc": (1.000, True), "gen": (0.679, True)}),
    (2.5, {"all": (1.000, True), "mc": (1.000, True), "gen": (1.000, True)}),
    (3.0, {"all": (1.000, True), "mc": (1.000, True), "gen": (1.000, True)}),
    (3.5, {"all": (1.000, True), "mc": (1.000, True), "gen": (0.000, True)}),
    (4.0, {"all": (1.000, True), "mc": (1.000, True), "gen": (0.000, True)}),
    (4.5, {"all": (0.000, True), "mc": (1.000, True), "gen": (0.000, True)}),
    (5.0, {"all": (0.000, True), "mc": (1.000, True), "gen": (0.000, True)}),
    (5.5, {"all": (1.000, True), "mc": (1.000, True), "gen": (0.000, True)}),
    (6.0, {"all": (1.000, True), "mc": (1.000, True), "gen": (0.000, True)}),
    (6.5, {"all": (1.000, True), "mc": (1.000, True), "gen": (1.000, True)}),
    (7.0, {"all": (1.000, True), "mc": (1.000, True), "gen": (1.000, True)}),
    (7.5, {"all": (1.000, True), "mc": (1.000, True), "gen": (1.000, True)}),
    (8.0, {"all": (1.000, True), "mc": (1.000, True), "gen": (0.654, False)}),
]
COLUMNS = ("all", "mc", "gen")
CRITICAL_PLW_SHORT = 0.242  # PLW paper Sec. 5.2, regression on AlpacaDataShort (Rg 0.082)
RG_SHORT_DATA = 0.082  # AlpacaDataShort, where the regression's 0.242 was measured (Sec. 5.1/5.2)
WIT_LAMBDA_P = (0.0, 0.6)  # "low-to-moderate (0-0.6)": best in 61 of 75 combinations
WIT_LAMBDA_R = (0.4, 1.0)  # "moderate-to-high (0.4-1)": best in 55 of 75 combinations
# Centre of the per-model mean optimal lambda_p (0.20 Llama-3-3B ... 0.42 Gemma-2-2B).
WIT_LAMBDA_P_CENTRE = 0.31
# lambda_r per Table 4 column: the centre of the range WIT found best for that kind of benchmark.
WIT_LAMBDA_R_BY_COLUMN = {"all": 0.7, "mc": 0.7, "gen": 0.8}
# Largest |d PLW / d Rg| of the curves (gen column, 7.5 -> 8.0: 0.654 over 0.5): the continuity bound tested.
MAX_SLOPE = 1.31
SRC_T4 = "PLW paper (Does Prompt Loss Matter?), Table 4 (App. B)"
SRC_REG = "PLW paper (Does Prompt Loss Matter?), Sec. 5.2 regression"
SRC_WIT = "WIT paper (On the Effect of Instruction Tuning Loss on Generalization), Key Observations / Key Trends"
SRC_SWEEP = "your sweep"
KEEP_MASKING = "keep masking (PLW 0): the weight does not matter here"


@dataclass(frozen=True)
class TableLookup:
    """Table 4 at a given Rg: linear interpolation between the two nearest rows (clamped to 0.5-8.0)."""

    rg: float
    column: str
    plw: float
    flagged: bool  # a bracketing row is starred: the paper finds < 5% of the score range between PLWs
    rows: tuple[float, float]  # the Rg rows used
    clamped: bool  # Rg outside the table: the nearest row is used


def table4(rg: float, column: str = "all") -> TableLookup:
    """Optimal PLW at ``rg`` from Table 4.

    >>> table4(1.25).plw, table4(1.25).flagged
    (0.169, False)
    >>> table4(0.08).plw, table4(0.08).clamped
    (0.155, True)
    >>> table4(3.27).flagged
    True
    """
    if column not in COLUMNS:
        raise ConfigError(f"unknown Table 4 column {column!r}; choose one of {COLUMNS}")
    rgs = [r for r, _ in TABLE4]
    x = min(max(rg, rgs[0]), rgs[-1])
    hi = next(i for i, r in enumerate(rgs) if r >= x)
    lo = max(hi - 1, 0) if rgs[hi] > x else hi
    (r0, v0), (r1, v1) = TABLE4[lo], TABLE4[hi]
    p0, s0 = v0[column]
    p1, s1 = v1[column]
    t = 0.0 if r1 == r0 else (x - r0) / (r1 - r0)
    plw = round(p0 + t * (p1 - p0), 3)
    return TableLookup(rg, column, plw, s0 or s1, (r0, r1), x != rg)


def _anchors(column: str) -> list[tuple[float, float, float]]:
    """(Rg, PLW, matters) points of one column's curve: a starred row is (Rg, 0, 0), i.e. keep masking."""
    pts = [(rg, 0.0 if star else plw, 0.0 if star else 1.0) for rg, cols in TABLE4 for plw, star in [cols[column]]]
    if column == "all":  # the regression was fitted on all benchmarks, at the Rg of the data it was fitted on
        pts.insert(0, (RG_SHORT_DATA, CRITICAL_PLW_SHORT, 1.0))
    return pts


def plw_curve(rg: float, column: str = "all") -> tuple[float, float]:
    """(PLW, matters) at ``rg``: piecewise-linear through the column's anchors, flat outside them.

    ``matters`` is 1 where the paper found an effect, 0 where its Table 4 row is starred, in between on the
    segments joining the two; the PLW of a starred row is 0 (masking, since any PLW does as well there).

    >>> plw_curve(0.082), plw_curve(0.5), plw_curve(1.0)
    ((0.242, 1.0), (0.155, 1.0), (0.155, 1.0))
    >>> plw_curve(3.27)
    (0.0, 0.0)
    """
    if column not in COLUMNS:
        raise ConfigError(f"unknown Table 4 column {column!r}; choose one of {COLUMNS}")
    if not rg > 0:
        raise ConfigError(f"Rg must be a positive number, got {rg}")
    pts = _anchors(column)
    if rg <= pts[0][0]:
        return pts[0][1], pts[0][2]
    for (r0, p0, m0), (r1, p1, m1) in itertools.pairwise(pts):
        if rg <= r1:
            t = (rg - r0) / (r1 - r0)
            return round(p0 + t * (p1 - p0), 6), round(m0 + t * (m1 - m0), 6)
    return pts[-1][1], pts[-1][2]


@dataclass
class SweepOptimum:
    """The user's own evidence for one dataset of a sweep (witune.analysis on the sweep's results)."""

    dataset: str
    critical_plw: float  # NaN: no interior maximum
    ci_low: float
    ci_high: float
    p_value: float  # likelihood-ratio test of any PLW effect
    significant: bool
    n_scores: int
    method: str  # the model that fitted it
    best_lambda_p: float | None = None  # best (lambda_p, lambda_r) by relative aggregate, when lambda_r was swept
    best_lambda_r: float | None = None
    best_evidence: str = ""  # the noise guard's verdict on that cell (witune.analysis.noise)


@dataclass
class Recommendation:
    rg: float
    kind: str  # short-completion / long-completion
    column: str
    plw: float
    lambda_p: float
    lambda_r: float
    lambda_p_range: tuple[float, float]
    lambda_r_range: tuple[float, float]
    weight_matters: bool  # False: the evidence finds the prompt weight makes no difference here: keep masking
    matters: float = 1.0  # 0-1: how much of the curve at this Rg comes from rows with an effect
    plw_interval: tuple[float, float] | None = None  # only from a sweep (bootstrap interval)
    source: str = "papers"  # "papers" or "your sweep"
    table: dict[str, TableLookup] = field(default_factory=dict)
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (reason, source)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def _feature_reasons(
    prompt_tokens: float | None, ngram_diversity: float | None, prompt_logprob: float | None
) -> list[tuple[str, str]]:
    """The WIT features, reported with their direction; they do not move the numbers (no sizes in the paper)."""
    out = []
    if prompt_tokens is not None:
        out.append(
            (
                f"average prompt length {prompt_tokens:.1f} tokens: WIT finds longer prompts go with a lower "
                "optimal lambda_p (negative correlation)",
                SRC_WIT,
            )
        )
    if ngram_diversity is not None:
        out.append(
            (
                f"prompt n-gram diversity {ngram_diversity:.3f}: WIT finds more diverse training prompts go with "
                "a lower optimal lambda_p (negative correlation)",
                SRC_WIT,
            )
        )
    if prompt_logprob is not None:
        out.append(
            (
                f"model's average prompt log-prob {prompt_logprob:.2f} nats/token: WIT finds a model that finds "
                "the prompts less likely goes with a lower optimal lambda_p (positive correlation)",
                SRC_WIT,
            )
        )
    if out:
        out.append(
            (
                "these features do NOT change the numbers above: the WIT paper reports only the sign of each "
                "correlation in its text (the coefficients are in an image), measured over 3 fine-tuning "
                "datasets (LIMA, Alpaca-Cleaned, Tulu-v2), and gives no reference values in any tokenizer, so no "
                "size of adjustment can be derived from it; sweep lambda_p if they point away from the "
                "recommendation",
                SRC_WIT,
            )
        )
    return out


def recommend(
    rg: float,
    column: str = "all",
    prompt_tokens: float | None = None,
    ngram_diversity: float | None = None,
    prompt_logprob: float | None = None,
    sweep: SweepOptimum | None = None,
) -> Recommendation:
    """A PLW and a (lambda_p, lambda_r) pair for data with generation ratio ``rg`` (ratio of means).

    With ``sweep`` (the user's own fit on this data), the sweep's optimum and interval replace the papers' numbers.
    """
    looks = {c: table4(rg, c) for c in COLUMNS}
    plw, m = plw_curve(rg, column)
    lambda_r = WIT_LAMBDA_R_BY_COLUMN[column]
    # Where the PLW matters, the PLW paper's ratio lambda_p / lambda_r; where it does not, WIT's centre.
    lambda_p = round(plw * lambda_r + (1.0 - m) * WIT_LAMBDA_P_CENTRE, 6)
    matters = m > 0.5
    reasons: list[tuple[str, str]] = []
    paper = ", ".join(f"{c} {v.plw:.3f}{'*' if v.flagged else ''}" for c, v in looks.items())
    where = (
        f"Rg {rg:.3g} is outside Table 4 (0.5-8.0)"
        if looks[column].clamped
        else f"Rg {rg:.3g} lies between Table 4 rows {looks[column].rows[0]:g} and {looks[column].rows[1]:g}"
    )
    reasons.append(
        (
            f"{where}; the table interpolated: {paper} (* = less than 5% of the score range between the "
            f"best and worst PLW); column used: {column!r}",
            SRC_T4,
        )
    )
    if column == "all":
        reasons.append(
            (
                f"the regression on AlpacaDataShort (Rg {RG_SHORT_DATA}) puts the critical PLW at "
                f"{CRITICAL_PLW_SHORT}; the curve passes through it there and joins Table 4 at Rg 0.5 "
                "(0.155) linearly, so there is no jump at Rg 1",
                SRC_REG,
            )
        )
    if matters:
        reasons.append(
            (f"PLW {plw:.3f}: the '{column}' curve at Rg {rg:.3g} (weight of rows with an effect: {m:.2f})", SRC_T4)
        )
    else:
        reasons.append(
            (
                f"{KEEP_MASKING}: the paper's rows around Rg {rg:.3g} ('{column}') are starred, and its "
                "regression found no PLW effect on AlpacaData (Rg 3.27, p = 0.237) or AlpacaDataCleaned "
                "(Rg 7.83, p = 0.086); any PLW in [0, 1] does as well",
                SRC_T4,
            )
        )
    reasons.append(
        (
            f"lambda_r {lambda_r:g}: lambda_r = 1 was optimal in only 18 of 75 WIT combinations, 0.4-1 in 55 "
            "of 75"
            + (
                "; conversation benchmarks prefer >= 0.6 (18 of 30), so the centre of 0.6-1"
                if column == "gen"
                else "; the centre of 0.4-1 (no separate figure for multiple-choice benchmarks)"
                if column == "mc"
                else "; the centre of 0.4-1"
            ),
            SRC_WIT,
        )
    )
    reasons.append(
        (
            f"lambda_p {lambda_p:.3g} = PLW {plw:.3f} x lambda_r {lambda_r:g} x (effect weight {m:.2f}) + "
            f"{WIT_LAMBDA_P_CENTRE} x (1 - {m:.2f}): where the PLW matters the ratio lambda_p / lambda_r is "
            "the PLW (only the ratio sets the gradient direction); where it does not, WIT's central value "
            "(mean optimal lambda_p 0.20-0.42 over models, 0.17 BBH - 0.48 IFEval over benchmarks)",
            SRC_WIT,
        )
    )
    reasons.extend(_feature_reasons(prompt_tokens, ngram_diversity, prompt_logprob))
    rec = Recommendation(
        rg,
        "short-completion" if rg < 1 else "long-completion",
        column,
        plw,
        lambda_p,
        lambda_r,
        WIT_LAMBDA_P,
        WIT_LAMBDA_R,
        matters,
        m,
        None,
        "papers",
        looks,
        reasons,
    )
    return apply_sweep(rec, sweep) if sweep is not None else rec


def apply_sweep(rec: Recommendation, s: SweepOptimum) -> Recommendation:
    """Your own fitted optimum beats any table: replace the PLW (and the WIT pair when the sweep varied lambda_r)."""
    import math

    rec.source = SRC_SWEEP
    label = f"your sweep, dataset {s.dataset!r}, {s.method} fit on {s.n_scores} scores"
    if s.significant and math.isfinite(s.critical_plw):
        rec.plw, rec.weight_matters, rec.matters = s.critical_plw, True, 1.0
        if math.isfinite(s.ci_low) and math.isfinite(s.ci_high):
            rec.plw_interval = (s.ci_low, s.ci_high)
        ci = f" (95% bootstrap interval {s.ci_low:.3g}-{s.ci_high:.3g})" if rec.plw_interval else " (no interval)"
        rec.reasons.insert(
            0,
            (
                f"PLW {s.critical_plw:.3g}{ci}: the critical PLW of the quadratic fit, PLW effect "
                f"p = {s.p_value:.3g}; this replaces the papers' tables",
                label,
            ),
        )
    else:
        rec.plw, rec.weight_matters, rec.matters, rec.plw_interval = 0.0, False, 0.0, None
        rec.reasons.insert(
            0,
            (
                f"{KEEP_MASKING}: your sweep finds no significant PLW effect (p = {s.p_value:.3g})"
                + ("" if math.isfinite(s.critical_plw) else ", and no interior maximum"),
                label,
            ),
        )
    if s.best_lambda_p is not None and s.best_lambda_r is not None:
        rec.lambda_p, rec.lambda_r = s.best_lambda_p, s.best_lambda_r
        rec.reasons.insert(
            1,
            (
                f"(lambda_p, lambda_r) = ({s.best_lambda_p:g}, {s.best_lambda_r:g}): "
                + (s.best_evidence or "the best configuration of your sweep by relative aggregate")
                + " (no interval: one best cell)",
                label,
            ),
        )
    elif rec.weight_matters:
        rec.lambda_p = rec.plw * rec.lambda_r
    return rec
