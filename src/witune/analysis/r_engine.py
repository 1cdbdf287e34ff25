"""Reference engine: the PLW paper's own models in R, run through ``Rscript`` (CSV in and out of a
temporary folder; no rpy2, so R stays an optional system package).

* GLMM (paper section 5.2, Table 3), fitted with glmmTMB exactly as written there::

      score ~ wp + I(wp^2) + (0 + wp + I(wp^2) | benchmark) + (1 | model),  family = beta_family(logit)

  on the min-max scores, with raw (not orthogonal) polynomial terms: the paper derives its vertex
  0.652 = 5.590 / (2 * 4.284) straight from the coefficients. A beta likelihood is undefined at exactly
  0 and 1, which min-max scores always reach, so the response is squeezed first with the standard
  transformation of Smithson & Verkuilen (2006), y' = (y (n - 1) + 0.5) / n, n the number of rows (the
  paper does not print its squeeze; this is the one the glmmTMB / betareg documentation recommends).
  A random effect with a single level is dropped (not identifiable). The joint test of wp and wp^2 is a
  likelihood-ratio test against ``score ~ 1`` with the same random effects; the critical-PLW interval is
  the delta-method interval of the vertex -b1 / (2 b2), mapped to PLW.
* GAM (paper section 6, Table 4): mgcv ``score ~ te(w, r, k=3) + factor(b)`` (+ ``factor(m)`` with
  several models), w the raw PLW, on the score scale, mgcv's default smoothing selection (GCV), as in the
  paper. The flat test uses mgcv's Bayesian covariance ``vcov(g)`` (see ``witune.analysis.gam``).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from witune.analysis import gam as gam_mod
from witune.analysis.plw import QuadFit, critical_plw, from_wp

GLMM_LABEL = "R glmmTMB beta GLMM, logit link"
TIMEOUT = 600

GLMM_R = r"""
args <- commandArgs(TRUE)
suppressMessages(library(glmmTMB))
all <- read.csv(file.path(args[1], "data.csv"))
for (k in sort(unique(all$ds))) {
d <- all[all$ds == k, ]
n <- nrow(d)
d$y <- (d$y * (n - 1) + 0.5) / n  # Smithson & Verkuilen (2006) squeeze into (0, 1)
slopes <- length(unique(d$b)) > 1
models <- length(unique(d$m)) > 1
# The paper's structure first; simpler ones only when it does not converge (the paper, too, "tried
# reducing the complexity of the model" where it failed).
structures <- list(c(if (slopes) "(0 + wp + I(wp^2) | b)", if (models) "(1 | m)"),
                   c(if (slopes) "diag(0 + wp + I(wp^2) | b)", if (models) "(1 | m)"),
                   c(if (models) "(1 | m)"), character(0))
fam <- beta_family(link = "logit")
fit_one <- function(lhs, re) {
  warn <- character(0)
  f <- as.formula(paste(lhs, paste(c("", re), collapse = " + ")))
  m <- tryCatch(withCallingHandlers(glmmTMB(f, data = d, family = fam), warning = function(w) {
    warn <<- c(warn, conditionMessage(w)); invokeRestart("muffleWarning") }), error = function(e) NULL)
  ok <- !is.null(m) && m$fit$convergence == 0 && isTRUE(m$sdr$pdHess) && is.finite(as.numeric(logLik(m)))
  list(model = m, ok = ok, warn = warn, formula = paste(deparse(f, width.cutoff = 500), collapse = ""))
}
tried <- character(0)
for (re in unique(lapply(structures, as.character))) {
  full <- fit_one("y ~ wp + I(wp^2)", re)
  if (full$ok) break
  tried <- c(tried, full$formula)
}
null <- fit_one("y ~ 1", re)
if (is.null(full$model)) {  # every structure failed outright: report NA rather than abort the others
  cf <- matrix(NA, 3, 4); v <- matrix(NA, 3, 3)
} else {
  cf <- summary(full$model)$coefficients$cond
  v <- vcov(full$model)$cond
}
out <- data.frame(term = c("Intercept", "wp", "wp2"), estimate = cf[, 1], se = cf[, 2], p = cf[, 4])
write.csv(out, file.path(args[1], paste0("coef_", k, ".csv")), row.names = FALSE)
llf_null <- if (is.null(null$model)) NA else as.numeric(logLik(null$model))
llf <- if (is.null(full$model)) NA else as.numeric(logLik(full$model))
info <- data.frame(llf = llf, llf_null = llf_null, cov12 = v[2, 3],
                   converged = full$ok, formula = full$formula, simplified_from = paste(tried, collapse = " | "),
                   warnings = paste(unique(full$warn), collapse = "; "), r_version = R.version.string,
                   glmmtmb = as.character(packageVersion("glmmTMB")))
write.csv(info, file.path(args[1], paste0("info_", k, ".csv")), row.names = FALSE)
}
"""

GAM_R = r"""
args <- commandArgs(TRUE)
suppressMessages(library(mgcv))
d <- read.csv(file.path(args[1], "data.csv"))
g <- read.csv(file.path(args[1], "grid.csv"))
d$b <- factor(d$b); d$m <- factor(d$m)
form <- "y ~ te(w, r, k = 3)"
if (nlevels(d$b) > 1) form <- paste(form, "+ b")
if (nlevels(d$m) > 1) form <- paste(form, "+ m")
fit <- gam(as.formula(form), data = d)
g$b <- factor(levels(d$b)[1], levels = levels(d$b)); g$m <- factor(levels(d$m)[1], levels = levels(d$m))
X <- predict(fit, g, type = "lpmatrix")
idx <- grep("^te\\(", colnames(X))
write.csv(X[, idx, drop = FALSE], file.path(args[1], "basis.csv"), row.names = FALSE)
write.csv(data.frame(coef = coef(fit)[idx]), file.path(args[1], "coef.csv"), row.names = FALSE)
write.csv(vcov(fit)[idx, idx, drop = FALSE], file.path(args[1], "vcov.csv"), row.names = FALSE)
s <- summary(fit)$s.table
write.csv(data.frame(edf = s[1, "edf"], p = s[1, "p-value"], formula = form,
                     mgcv = as.character(packageVersion("mgcv"))), file.path(args[1], "info.csv"),
          row.names = FALSE)
"""


@functools.lru_cache(maxsize=1)
def r_status() -> tuple[bool, str]:
    """(available, reason): Rscript on PATH with glmmTMB and mgcv installed."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return False, "Rscript not found (apt-get install r-base-core r-cran-glmmtmb r-cran-mgcv)"
    try:
        proc = subprocess.run(
            [rscript, "-e", "suppressMessages({library(glmmTMB); library(mgcv)})"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"Rscript failed to start ({exc})"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return False, f"R lacks glmmTMB or mgcv ({last})"
    return True, "R with glmmTMB and mgcv"


def resolve_engine(engine: str) -> str:
    """``auto`` -> ``r`` when R with glmmTMB and mgcv is present, else ``python``; ``r`` without R raises."""
    if engine not in ("auto", "r", "python"):
        raise ValueError(f"unknown engine {engine!r} (auto, r or python)")
    if engine == "python":
        return engine
    ok, why = r_status()
    if engine == "r" and not ok:
        raise RuntimeError(f"--engine r: {why}")
    return "r" if ok else "python"


def _run(script: str, folder: Path) -> None:
    (folder / "script.R").write_text(script, encoding="utf-8")
    proc = subprocess.run(
        ["Rscript", "--vanilla", str(folder / "script.R"), str(folder)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"Rscript failed: {tail}")


def fit_glmm(rows: pd.DataFrame, dataset: str, response: str = "relative") -> QuadFit:
    """The paper's beta GLMM on one dataset's PLW rows (``plw_rows``), response column ``response``."""
    return fit_glmms(rows, [dataset], response)[0]


def fit_glmms(rows: pd.DataFrame, datasets: list[str], response: str = "relative") -> list[QuadFit]:
    """The paper's beta GLMM for each dataset, all in one Rscript process (loading glmmTMB takes seconds)."""
    data = rows[rows["dataset"].isin(datasets)]
    index = {name: i for i, name in enumerate(datasets)}
    frame = pd.DataFrame(
        {
            "ds": data["dataset"].map(index),
            "y": data[response].astype(float).clip(0, 1),
            "wp": data["wp"].astype(float),
            "b": data["task"].astype(str),
            "m": data["model"].astype(str),
        }
    )
    with tempfile.TemporaryDirectory(prefix="witune-r-") as tmp:
        folder = Path(tmp)
        frame.to_csv(folder / "data.csv", index=False)
        _run(GLMM_R, folder)
        out = [
            _glmm_fit(
                name,
                int((data["dataset"] == name).sum()),
                pd.read_csv(folder / f"coef_{index[name]}.csv").set_index("term"),
                pd.read_csv(folder / f"info_{index[name]}.csv", keep_default_na=False).iloc[0],
            )
            for name in datasets
        ]
    return out


def _glmm_fit(dataset: str, n: int, coef: pd.DataFrame, info: pd.Series) -> QuadFit:
    b0, b1, b2 = (float(coef.loc[k, "estimate"]) for k in ["Intercept", "wp", "wp2"])
    se1, se2 = float(coef.loc["wp", "se"]), float(coef.loc["wp2", "se"])
    lrt = 2.0 * (_num(info["llf"]) - _num(info["llf_null"]))  # NaN when either fit failed
    fit = QuadFit(
        dataset=dataset,
        n=n,
        intercept=b0,
        b1=b1,
        b2=b2,
        p_wp=float(coef.loc["wp", "p"]),
        p_wp2=float(coef.loc["wp2", "p"]),
        p_lrt=float(stats.chi2.sf(max(lrt, 0.0), df=2)) if np.isfinite(lrt) else float("nan"),
        critical_plw=critical_plw(b1, b2),
        method=f"{GLMM_LABEL}: {info['formula']}",
        engine="r",
        se_b1=se1,
        se_b2=se2,
    )
    fit.ci_low, fit.ci_high = _vertex_interval(b1, b2, se1**2, se2**2, _num(info["cov12"]))
    notes = [] if str(info["converged"]).upper() == "TRUE" else ["glmmTMB did not converge (no simpler model did)"]
    if str(info["simplified_from"]).strip():
        notes.append(f"simplified: the paper's random effects did not converge ({info['simplified_from']})")
    if str(info["warnings"]).strip():
        notes.append(f"R warnings: {str(info['warnings'])[:200]}")
    fit.note = "; ".join(notes)
    return fit


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):  # R's NA
        return float("nan")


def _vertex_interval(b1: float, b2: float, v11: float, v22: float, v12: float) -> tuple[float, float]:
    """Delta-method 95% interval of the vertex wp* = -b1 / (2 b2), clipped to [0, 1], as PLW."""
    if not b2 < 0 or not np.isfinite(v11 + v22 + v12):
        return float("nan"), float("nan")
    vertex = -b1 / (2 * b2)
    grad = np.array([-1 / (2 * b2), b1 / (2 * b2**2)])
    se = float(np.sqrt(grad @ np.array([[v11, v12], [v12, v22]]) @ grad))
    lo, hi = np.clip([vertex - 1.96 * se, vertex + 1.96 * se], 0.0, 1.0)
    return float(from_wp(lo)), float(from_wp(hi))


def fit_gam(rows: pd.DataFrame) -> gam_mod.GamResult | None:
    """The paper's mgcv GAM on the score scale; same table and surface as the Python engine."""
    data = gam_mod.gam_data(rows)
    if data is None:
        return None
    wp = np.linspace(0.0, 1.0, 201)
    rgs = gam_mod.rg_grid(data["rg"].unique())
    grid = pd.DataFrame({"w": np.tile(from_wp(wp), len(rgs)), "r": np.repeat(rgs, len(wp))})
    frame = pd.DataFrame(
        {
            "y": data["y"],
            "w": data["plw"].astype(float),
            "r": data["rg"].astype(float),
            "b": data["task"].astype(str),
            "m": data["model"].astype(str),
        }
    )
    with tempfile.TemporaryDirectory(prefix="witune-r-") as tmp:
        folder = Path(tmp)
        frame.to_csv(folder / "data.csv", index=False)
        grid.to_csv(folder / "grid.csv", index=False)
        _run(GAM_R, folder)
        basis = pd.read_csv(folder / "basis.csv").to_numpy(float)
        coef = pd.read_csv(folder / "coef.csv")["coef"].to_numpy(float)
        cov = pd.read_csv(folder / "vcov.csv").to_numpy(float)
        info = pd.read_csv(folder / "info.csv").iloc[0]
    curves, p_flat = [], []  # one smooth curve over wp (and its flatness test) per rg
    for i in range(len(rgs)):
        x = basis[i * len(wp) : (i + 1) * len(wp)]
        curves.append(x @ coef)
        p_flat.append(gam_mod.wald_flat(x - x.mean(axis=0), coef, cov))
    surface = np.asarray(curves)
    table = gam_mod.summarise(rgs, wp, surface, p_flat, float(np.ptp(data["y"])))
    label = (
        f"R mgcv gam({info['formula']}), Gaussian, identity link, score scale, w = raw PLW "
        f"(te edf {float(info['edf']):.2f}, p = {float(info['p']):.2g})"
    )
    return gam_mod.GamResult(table, wp, rgs, surface, len(data), "r", label)
