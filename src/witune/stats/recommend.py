"""Recommend prompt/response loss weights from a data set's Rg and prompt characteristics, with sources.

Sources (texts in shared/seeds/):
- PLW paper (seed 004), Appendix B, Table 4: optimal PLW per Rg from the GAM ratio-PLW interaction for "All",
  "MC" (multiple-choice) and "Gen" (TruthfulQA-Gen, AlpacaEval 1, PandaLM) benchmarks. A ``*`` marks rows where
  "the difference between the maximum and minimum predicted values at this ratio is less than 5% of the score
  range", i.e. the weight barely matters there.
- PLW paper, Sec. 5.2: regression critical value PLW = 0.242 for short-completion data (AlpacaDataShort, Rg 0.082);
  Sec. 6: "PLW = 0.155 for small completion-prompt length ratios (Rg <= 1) and up to PLW = 0.278 for Rg = 1.5".
- WIT paper (seed 000): best results with lambda_p in 0-0.5 and lambda_r in 0.5-1; the optimal lambda_p correlates
  positively with the generation ratio and the prompts' average log-probability, negatively with prompt length,
  n-gram diversity and parse depth (signs only; the paper gives no formula).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from witune.data.errors import ConfigError

# (Rg, {column: (optimal PLW, starred)}), copied from the PLW paper's Table 4 (seed 004, Appendix B).
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
WIT_LAMBDA_P = (0.0, 0.5)
WIT_LAMBDA_R = (0.5, 1.0)
SRC_T4 = "PLW paper (seed 004), Table 4"
SRC_REG = "PLW paper (seed 004), Sec. 5.2 regression"
SRC_WIT = "WIT paper (seed 000)"


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


@dataclass
class Recommendation:
    rg: float
    kind: str  # short-completion / long-completion
    plw: float
    lambda_p: float
    lambda_r: float
    lambda_p_range: tuple[float, float]
    lambda_r_range: tuple[float, float]
    weight_matters: bool  # False: the papers find the prompt weight makes little difference here
    table: dict[str, TableLookup] = field(default_factory=dict)
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (reason, source)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def recommend(rg: float, column: str = "all", prompt_tokens: float | None = None,
              ngram_diversity: float | None = None, prompt_logprob: float | None = None) -> Recommendation:
    """A PLW and a (lambda_p, lambda_r) pair for data with generation ratio ``rg`` (ratio of means)."""
    looks = {c: table4(rg, c) for c in COLUMNS}
    look = looks[column]
    short = rg < 1
    reasons: list[tuple[str, str]] = []
    where = f"Rg {rg:.3g}" + (f" is outside the table (0.5-8.0); the nearest row ({look.rows[0]:g}) is used"
                              if look.clamped else f" lies between the rows Rg {look.rows[0]:g} and {look.rows[1]:g}")
    reasons.append((f"{where}; interpolated optimal PLW: " + ", ".join(
        f"{c} {v.plw:.3f}{'*' if v.flagged else ''}" for c, v in looks.items()), SRC_T4))
    if short:
        plw = CRITICAL_PLW_SHORT
        reasons.append((f"short-completion data (Rg < 1): the regression's critical PLW is {CRITICAL_PLW_SHORT} "
                        "(0.01-0.1 best for multiple-choice and short generation, ~1.0 for long generation); "
                        f"Table 4 gives {looks['all'].plw:.3f} (All), close to it", SRC_REG))
    else:
        plw = look.plw
    # Short-completion data is where the PLW paper found a significant effect (Sec. 5.2), whatever the column.
    matters = short or not look.flagged
    if not matters:
        reasons.append(("the prompt weight barely matters at this Rg: the paper marks Table 4 here ('*') because the "
                        "best and worst PLW differ by less than 5% of the score range, and found no PLW effect on "
                        "AlpacaData (Rg 3.27) or AlpacaDataCleaned (Rg 7.83); any PLW in [0, 1] is fine, including "
                        "the usual masking (PLW 0)", SRC_T4))
    # lambda_p: in the WIT range; short data -> the PLW papers' value (inside that range); long data -> the top of
    # the range, since WIT finds the optimal lambda_p rises with the generation ratio.
    lambda_p = min(plw, WIT_LAMBDA_P[1]) if matters else WIT_LAMBDA_P[1]
    reasons.append((f"lambda_p {lambda_p:.3g}: WIT finds lambda_p in {WIT_LAMBDA_P[0]}-{WIT_LAMBDA_P[1]} best in ~81% "
                    "of settings, higher for data with a higher generation ratio", SRC_WIT))
    reasons.append((f"lambda_r 1.0 (sweep {WIT_LAMBDA_R[0]}-{WIT_LAMBDA_R[1]}): WIT finds 0.4-1 best in ~73% of "
                    "settings; lower values favour instruction following (IFEval), >= 0.6 conversation", SRC_WIT))
    if prompt_tokens is not None:
        reasons.append((f"average prompt length {prompt_tokens:.1f} tokens: longer prompts favour a lower lambda_p "
                        "(negative correlation)", SRC_WIT))
    if ngram_diversity is not None:
        reasons.append((f"prompt n-gram diversity {ngram_diversity:.3f}: more diverse prompts favour a lower "
                        "lambda_p (negative correlation)", SRC_WIT))
    if prompt_logprob is not None:
        reasons.append((f"model's average prompt log-prob {prompt_logprob:.2f} nats/token: a model that finds the "
                        "prompts less likely favours a lower lambda_p (positive correlation)", SRC_WIT))
    return Recommendation(rg, "short-completion" if short else "long-completion", plw, lambda_p, 1.0,
                          WIT_LAMBDA_P, WIT_LAMBDA_R, matters, looks, reasons)
