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

How the evidence becomes one recommendation (``recommend``): one (lambda_p, lambda_r) pair, its PLW equivalent
lambda_p / lambda_r (for trainers with a response weight of 1; only the ratio sets the gradient's direction), and
exactly one reason per number, every printed formula evaluating to its printed value (tested on a grid of Rg x
columns):
- PLW from ``plw_curve``: each column is a piecewise-linear curve through Table 4's rows, where a starred row
  contributes PLW 0 (the paper found any PLW as good there); flat outside the table. Below Rg 0.5 the curve stays
  at the 0.5 row: for "all" that is the 0.155 the paper states for Rg <= 1 (its regression's 0.242 on one data set
  is quoted as context, not used). There is no branch at Rg = 1: the answer moves by at most ``MAX_SLOPE`` per
  unit of Rg everywhere (tested on a fine grid).
- ``matters`` m (how strongly the paper found an effect) is interpolated the same way (1 unstarred, 0 starred).
- lambda_r from the WIT shares per benchmark type.
- lambda_p = PLW x lambda_r + 0.31 x (1 - m): the PLW paper's ratio where it found an effect, moving continuously
  towards 0.31 where it found none. 0.31 is **witune's** midpoint of WIT's per-model mean optimal lambda_p
  (0.20-0.42), not a number in the WIT paper; the WIT paper found low-to-moderate lambda_p best in 61 of 75
  settings, long-completion data included.
- The WIT data features do not move the numbers: the paper gives no sizes (see above). They are reported with
  their direction only.
- With ``--from SWEEP`` (``from_sweep``) only the sweep's evidence sets the numbers and only the sweep's reasons
  are given (the papers' curve appears once, as "not used").
"""

from __future__ import annotations

import itertools
import math
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
CRITICAL_PLW_SHORT = 0.242  # PLW paper Sec. 5.2, regression on AlpacaDataShort (Rg 0.082): context only
RG_SHORT_DATA = 0.082  # AlpacaDataShort, where the regression's 0.242 was measured (Sec. 5.1/5.2)
PLW_SHORT = 0.155  # PLW paper Sec. 6: "PLW = 0.155 for small completion-prompt length ratios (Rg <= 1)"
WIT_LAMBDA_P = (0.0, 0.6)  # "low-to-moderate (0-0.6)": best in 61 of 75 combinations
WIT_LAMBDA_R = (0.4, 1.0)  # "moderate-to-high (0.4-1)": best in 55 of 75 combinations
# witune's midpoint of the per-model mean optimal lambda_p the WIT paper reports (0.20 Llama-3-3B ... 0.42
# Gemma-2-2B): our choice, not a number the WIT paper gives.
WIT_LAMBDA_P_CENTRE = 0.31
# lambda_r per Table 4 column: the centre of the range WIT found best for that kind of benchmark.
WIT_LAMBDA_R_BY_COLUMN = {"all": 0.7, "mc": 0.7, "gen": 0.8}
# Largest |d PLW / d Rg| of the curves (gen column, 7.5 -> 8.0: 0.654 over 0.5): the continuity bound tested
# (the PLW equivalent lambda_p / lambda_r moves by at most MAX_SLOPE + 0.31 / 0.7 per unit of m's slope 2).
MAX_SLOPE = 1.31
SRC_T4 = "PLW paper (Does Prompt Loss Matter?), Table 4 (App. B) and Sec. 6"
SRC_REG = "PLW paper (Does Prompt Loss Matter?), Sec. 5.2 regression"
SRC_WIT = "WIT paper (On the Effect of Instruction Tuning Loss on Generalization), Key Observations / Key Trends"
SRC_OURS = "witune (its own choice, from the WIT paper's range)"
SRC_SWEEP = "your sweep"
KEEP_MASKING = "keep masking (PLW 0)"
NUMBERS = ("lambda_p", "lambda_r", "plw")  # every recommended number; each has exactly one reason


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
    _check_column(column)
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


def _check_column(column: str) -> None:
    if column not in COLUMNS:
        raise ConfigError(f"unknown Table 4 column {column!r}; choose one of {COLUMNS}")


def _anchors(column: str) -> list[tuple[float, float, float]]:
    """(Rg, PLW, matters) points of one column's curve: a starred row is (Rg, 0, 0)."""
    return [(rg, 0.0 if star else plw, 0.0 if star else 1.0) for rg, cols in TABLE4 for plw, star in [cols[column]]]


def plw_curve(rg: float, column: str = "all") -> tuple[float, float]:
    """(PLW, matters) at ``rg``: piecewise-linear through the column's Table 4 rows, flat outside them.

    ``matters`` is 1 where the paper found an effect, 0 where its Table 4 row is starred, in between on the
    segments joining the two; the PLW of a starred row is 0 (any PLW does as well there).

    >>> plw_curve(0.082), plw_curve(0.5), plw_curve(1.0)
    ((0.155, 1.0), (0.155, 1.0), (0.155, 1.0))
    >>> plw_curve(3.27)
    (0.0, 0.0)
    """
    _check_column(column)
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
    """The user's own evidence for one dataset of a sweep (``witune.analysis.optimum.sweep_optimum``)."""

    dataset: str
    shape: str  # witune.analysis.plw.SHAPES
    reading: str  # the fit's one-sentence reading
    best_plw: float  # the PLW the fit points to (NaN: it says nothing)
    ci_low: float
    ci_high: float
    interval: str  # how the interval was computed
    p_value: float  # likelihood-ratio test of any PLW effect (NaN: could not be tested)
    n_scores: int
    method: str  # the model that fitted it
    notes: list[str] = field(default_factory=list)
    best_lambda_p: float | None = None  # the WIT-grid cell the noise guard supports, when lambda_r was swept
    best_lambda_r: float | None = None
    best_evidence: str = ""  # the noise guard's verdict on that cell (witune.analysis.noise)

    @property
    def significant(self) -> bool:
        return self.shape in ("interior optimum", "increasing", "decreasing", "U-shaped")


@dataclass
class Reason:
    about: str  # one of NUMBERS, or "context" (said, but sets no number)
    text: str
    source: str


@dataclass
class Recommendation:
    rg: float
    kind: str  # short-completion / long-completion
    column: str
    plw: float  # the recommendation as a PLW (response weight 1): lambda_p / lambda_r
    lambda_p: float
    lambda_r: float
    lambda_p_range: tuple[float, float]
    lambda_r_range: tuple[float, float]
    weight_matters: bool  # the evidence found a PLW effect at this Rg
    matters: float = 1.0  # 0-1: how much of the curve at this Rg comes from rows with an effect
    plw_interval: tuple[float, float] | None = None  # only from a sweep
    interval_method: str = ""
    source: str = "papers"  # "papers" or "your sweep"
    table: dict[str, TableLookup] = field(default_factory=dict)
    reasons: list[Reason] = field(default_factory=list)
    curve_plw: float = float("nan")  # the papers' PLW curve at this Rg (the input of lambda_p)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)

    def reason(self, about: str) -> Reason:
        """The one reason for a recommended number."""
        return next(r for r in self.reasons if r.about == about)


def _feature_reasons(
    prompt_tokens: float | None, ngram_diversity: float | None, prompt_logprob: float | None
) -> list[Reason]:
    """The WIT features, reported with their direction; they do not move the numbers (no sizes in the paper)."""
    out = []
    if prompt_tokens is not None:
        out.append(
            f"average prompt length {prompt_tokens:.1f} tokens: WIT finds longer prompts go with a lower "
            "optimal lambda_p (negative correlation)"
        )
    if ngram_diversity is not None:
        out.append(
            f"prompt n-gram diversity {ngram_diversity:.3f}: WIT finds more diverse training prompts go with "
            "a lower optimal lambda_p (negative correlation)"
        )
    if prompt_logprob is not None:
        out.append(
            f"model's average prompt log-prob {prompt_logprob:.2f} nats/token: WIT finds a model that finds "
            "the prompts less likely goes with a lower optimal lambda_p (positive correlation)"
        )
    if out:
        out.append(
            "these features do NOT change the numbers above: the WIT paper reports only the sign of each "
            "correlation in its text (the coefficients are in an image), measured over 3 fine-tuning "
            "datasets (LIMA, Alpaca-Cleaned, Tulu-v2), and gives no reference values in any tokenizer, so no "
            "size of adjustment can be derived from it; sweep lambda_p if they point away from the "
            "recommendation"
        )
    return [Reason("context", text, SRC_WIT) for text in out]


def _n(x: float) -> str:
    """A number as printed in a formula: its exact (already rounded) decimal value."""
    return f"{x:g}"


def _lambda_r_reason(lambda_r: float, column: str) -> Reason:
    tail = (
        "; conversation benchmarks prefer >= 0.6 (18 of 30), so the centre of 0.6-1"
        if column == "gen"
        else "; the centre of 0.4-1 (no separate figure for multiple-choice benchmarks)"
        if column == "mc"
        else "; the centre of 0.4-1"
    )
    text = f"lambda_r {_n(lambda_r)}: lambda_r = 1 was optimal in only 18 of 75 WIT combinations, 0.4-1 in 55 of 75"
    return Reason("lambda_r", text + tail, SRC_WIT)


def _plw_reason(rec: Recommendation) -> Reason:
    return Reason(
        "plw",
        f"PLW {_n(rec.plw)} = lambda_p {_n(rec.lambda_p)} / lambda_r {_n(rec.lambda_r)}: the same prompt-to-response "
        "ratio for a trainer whose response weight is 1 (only the ratio sets the gradient's direction)",
        "witune (follows from the two weights)",
    )


def _ratio(lambda_p: float, lambda_r: float) -> float:
    return round(lambda_p / lambda_r, 3) if lambda_r > 0 else float("nan")


def recommend(
    rg: float,
    column: str = "all",
    prompt_tokens: float | None = None,
    ngram_diversity: float | None = None,
    prompt_logprob: float | None = None,
    sweep: SweepOptimum | None = None,
) -> Recommendation:
    """A (lambda_p, lambda_r) pair and its PLW for data with generation ratio ``rg`` (ratio of means).

    With ``sweep`` (the user's own fit on this data) the sweep's evidence replaces the papers' (``from_sweep``).
    """
    looks = {c: table4(rg, c) for c in COLUMNS}
    curve, m = plw_curve(rg, column)
    curve, m = round(curve, 3), round(m, 3)
    lambda_r = WIT_LAMBDA_R_BY_COLUMN[column]
    lambda_p = round(curve * lambda_r + WIT_LAMBDA_P_CENTRE * (1.0 - m), 4)
    rec = Recommendation(
        rg,
        "short-completion" if rg < 1 else "long-completion",
        column,
        _ratio(lambda_p, lambda_r),
        lambda_p,
        lambda_r,
        WIT_LAMBDA_P,
        WIT_LAMBDA_R,
        m > 0.5,
        m,
        table=looks,
        curve_plw=curve,
    )
    paper = ", ".join(f"{c} {v.plw:.3f}{'*' if v.flagged else ''}" for c, v in looks.items())
    where = (
        f"Rg {rg:.3g} is outside Table 4 (0.5-8.0): the nearest row is used"
        if looks[column].clamped
        else f"Rg {rg:.3g} lies between Table 4 rows {looks[column].rows[0]:g} and {looks[column].rows[1]:g}"
    )
    effect = (
        "the paper found a PLW effect here"
        if m == 1
        else "the paper found no PLW effect here (starred: any PLW does as well)"
        if m == 0
        else f"{m:.2f} of the curve here comes from rows with an effect, the rest from starred rows"
    )
    if m == 1:
        formula = f"lambda_p {_n(lambda_p)} = PLW curve {_n(curve)} x lambda_r {_n(lambda_r)}"
        why = "the PLW paper's prompt-to-response ratio, carried to WIT's lambda_r"
    elif m == 0:
        formula = f"lambda_p {_n(lambda_p)}"
        why = (
            "with no PLW effect to follow, witune's midpoint of the WIT paper's per-model mean optimal lambda_p "
            "(0.20 Llama-3-3B to 0.42 Gemma-2-2B; 0.31 is witune's number, the WIT paper found low-to-moderate "
            "lambda_p best in 61 of 75 settings)"
        )
    else:
        formula = f"lambda_p {_n(lambda_p)} = PLW curve {_n(curve)} x lambda_r {_n(lambda_r)} + 0.31 x (1 - {_n(m)})"
        why = "the PLW paper's ratio where it found an effect, blended towards witune's midpoint 0.31 where not"
    rec.reasons.append(
        Reason(
            "lambda_p",
            f"{formula}: {why}; the '{column}' PLW curve at Rg {rg:.3g} is {_n(curve)} ({effect}; {where}; "
            f"Table 4 interpolated: {paper}, * = less than 5% of the score range between the best and worst PLW)",
            SRC_T4 if m > 0 else SRC_OURS,
        )
    )
    rec.reasons.append(_lambda_r_reason(lambda_r, column))
    rec.reasons.append(_plw_reason(rec))
    if column == "all" and rg <= 1:
        rec.reasons.append(
            Reason(
                "context",
                f"the paper's regression on AlpacaDataShort (Rg {RG_SHORT_DATA}) puts the critical PLW at "
                f"{CRITICAL_PLW_SHORT}, which the paper calls close to the {PLW_SHORT} it states for Rg <= 1; "
                f"witune follows the stated {PLW_SHORT}",
                SRC_REG,
            )
        )
    rec.reasons.extend(_feature_reasons(prompt_tokens, ngram_diversity, prompt_logprob))
    return from_sweep(rec, sweep) if sweep is not None else rec


def from_sweep(papers: Recommendation, s: SweepOptimum) -> Recommendation:
    """Your own sweep's evidence instead of the papers: its numbers, and only its reasons.

    A PLW sweep (response weight 1 only) sets PLW = lambda_p from the fit's shape, lambda_r = 1; a WIT grid sets
    (lambda_p, lambda_r) to the cell the noise guard supports (conventional tuning unless one beat it beyond noise),
    with the PLW fit of its lambda_r = 1 rows as context. A fit that could not be tested sets nothing: the papers'
    recommendation stands, said first.
    """
    label = f"your sweep, dataset {s.dataset!r}, {s.method} fit on {s.n_scores} scores"
    grid = s.best_lambda_p is not None and s.best_lambda_r is not None
    if not grid and not math.isfinite(s.best_plw) and s.shape != "flat":
        papers.reasons.insert(
            0, Reason("context", f"your sweep: {s.reading}; the papers' recommendation below stands", label)
        )
        return papers
    rec = Recommendation(
        papers.rg,
        papers.kind,
        papers.column,
        0.0,
        0.0,
        1.0,
        papers.lambda_p_range,
        papers.lambda_r_range,
        s.significant,
        1.0 if s.significant else 0.0,
        source=SRC_SWEEP,
        table=papers.table,
        curve_plw=papers.curve_plw,
    )
    if grid:
        assert s.best_lambda_p is not None and s.best_lambda_r is not None
        rec.lambda_p, rec.lambda_r = s.best_lambda_p, s.best_lambda_r
        rec.plw = _ratio(rec.lambda_p, rec.lambda_r)
        cell = f"(lambda_p, lambda_r) = ({_n(rec.lambda_p)}, {_n(rec.lambda_r)})"
        rec.reasons.append(Reason("lambda_p", f"lambda_p {_n(rec.lambda_p)}: {cell}, {s.best_evidence}", label))
        rec.reasons.append(Reason("lambda_r", f"lambda_r {_n(rec.lambda_r)}: the same cell of your sweep", label))
        rec.reasons.append(_plw_reason(rec))
        rec.reasons.append(Reason("context", f"within lambda_r = 1, the PLW fit: {s.reading}", label))
        rec.weight_matters = bool(rec.lambda_p > 0)
    else:
        plw = 0.0 if s.shape == "flat" else s.best_plw
        rec.plw, rec.lambda_p = plw, plw
        if s.shape == "interior optimum" and math.isfinite(s.ci_low):
            rec.plw_interval, rec.interval_method = (s.ci_low, s.ci_high), s.interval
        text = (
            f"PLW {_n(plw)}: {KEEP_MASKING}, {s.reading}"
            if s.shape == "flat"
            else f"PLW {_n(round(plw, 4))}: {s.reading}; this replaces the papers' curve"
        )
        rec.reasons.append(Reason("plw", text, label))
        rec.reasons.append(
            Reason("lambda_p", f"lambda_p {_n(rec.lambda_p)} = PLW {_n(plw)} x lambda_r 1", "follows from the PLW")
        )
        rec.reasons.append(
            Reason(
                "lambda_r",
                "lambda_r 1: your sweep varied the prompt weight at response weight 1 only (WIT's lambda_r "
                "0.4-1 is untested by it)",
                label,
            )
        )
    rec.reasons += [Reason("context", f"fit note: {note}", label) for note in s.notes]
    rec.reasons.append(
        Reason(
            "context",
            f"not used: the papers' '{papers.column}' curve would give PLW {_n(papers.curve_plw)} at Rg {papers.rg:.3g}",
            SRC_T4,
        )
    )
    return rec
