"""The R engine: the PLW paper's own models, run through ``Rscript`` on the package's R files (``analysis/r/``),
with CSV in and out of a temporary folder (no rpy2, so R stays an optional system package).

* GLMM (paper section 5.2, Table 3; ``r/glmm.R``), fitted with glmmTMB exactly as written there::

      score ~ wp + I(wp^2) + (0 + wp + I(wp^2) | benchmark) + (1 | model),  family = beta_family(logit)

  on the min-max scores, with raw (not orthogonal) polynomial terms: the paper derives its vertex
  0.652 = 5.590 / (2 * 4.284) straight from the coefficients. A beta likelihood is undefined at exactly 0 and 1,
  which min-max scores always reach, so the response is squeezed first (Smithson & Verkuilen 2006,
  y' = (y (n - 1) + 0.5) / n, n the number of rows). A random effect with a single level is dropped. The joint
  test of wp and wp^2 is a likelihood-ratio test against ``score ~ 1`` with the same random effects; the lack of
  fit (per-run means) and the interval (Fieller's) are ``witune.analysis.plw``'s.
* GAMs (paper section 6, Table 4; ``r/gam.R``): witune's per-run fit ``y ~ te(wp, r, k = 3)`` (the flat test
  and ``optimal_plw``) and the paper's ``score ~ te(w, r, k=3) + factor(b)`` on raw PLW (``paper_optimal_plw``),
  both mgcv with its default smoothing selection (``witune.analysis.gam`` says why two).

``Rscript`` runs under a time limit (``timeout``, the CLI's ``--r-timeout``); the scripts print a line per
finished fit, which drives the progress bar. A time-out, a failure or output that cannot be read is one
``RuntimeError`` line, never a traceback.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from witune.analysis import gam as gam_view
from witune.analysis.plw import QuadFit, critical_plw, finish, from_wp, lack_of_fit, lrt_p, plw_datasets

GLMM_LABEL = "R glmmTMB beta GLMM, logit link"
TIMEOUT = 600.0  # seconds; the CLI's --r-timeout
Tick = Callable[[], None]


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


def script(name: str) -> Path:
    """Path of one of the package's R files (``glmm.R``, ``gam.R``)."""
    return Path(str(resources.files("witune.analysis").joinpath("r", name)))


def run_script(name: str, folder: Path, timeout: float = TIMEOUT, tick: Tick | None = None) -> None:
    """Run ``Rscript --vanilla r/NAME FOLDER``; ``tick`` is called for every "tick" line it prints."""
    cmd = ["Rscript", "--vanilla", str(script(name)), str(folder)]
    try:
        # its own process group: a hung Rscript is stopped with everything it started (their pipes close too)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    except OSError as exc:
        raise RuntimeError(f"Rscript could not start ({exc})") from None
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr or []), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    watchdog = threading.Timer(timeout, _stop, args=(proc,))  # a hanging Rscript is stopped at the deadline
    watchdog.start()
    try:
        for line in proc.stdout or []:
            if line.strip() == "tick" and tick is not None:
                tick()
        proc.wait()
    finally:
        watchdog.cancel()
    reader.join(timeout=5)
    if time.monotonic() >= deadline and proc.returncode != 0:
        raise RuntimeError(f"Rscript ({name}) did not finish within {timeout:g} s and was stopped (--r-timeout)")
    if proc.returncode != 0:
        tail = " | ".join(line.strip() for line in err[-3:] if line.strip()) or f"exit status {proc.returncode}"
        raise RuntimeError(f"Rscript ({name}) failed: {tail}")


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def read_output(path: Path, columns: list[str], keep_na: bool = True) -> pd.DataFrame:
    """A CSV the R script wrote, with the columns it must have; anything else is one ``RuntimeError`` line."""
    try:
        frame = pd.read_csv(path, keep_default_na=keep_na)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RuntimeError(f"Rscript output {path.name} is unreadable ({first})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing or frame.empty:
        raise RuntimeError(f"Rscript output {path.name} is malformed (missing {missing or 'rows'})")
    return frame


def fit_plw(
    rows: pd.DataFrame,
    n_boot: int = 0,
    seed: int = 0,
    progress: Tick | None = None,
    timeout: float = TIMEOUT,
    response: str = "relative",
) -> list[QuadFit]:
    """The paper's beta GLMM for every dataset of ``plw_rows`` with >= 3 PLWs, all in one Rscript process."""
    datasets = plw_datasets(rows)
    if not datasets:
        return []
    data = rows[rows["dataset"].isin(datasets)]
    index = {name: i for i, name in enumerate(datasets)}
    frame = pd.DataFrame(
        {
            "ds": data["dataset"].map(index),
            "y": data[response].astype(float).clip(0, 1),
            "wp": data["wp"].astype(float),
            "plw": data["plw"].astype(float),
            "b": data["task"].astype(str),
            "m": data["model"].astype(str),
        }
    )
    with tempfile.TemporaryDirectory(prefix="witune-r-") as tmp:
        folder = Path(tmp)
        frame.to_csv(folder / "data.csv", index=False)
        pd.DataFrame({"nboot": [n_boot], "seed": [seed]}).to_csv(folder / "options.csv", index=False)
        run_script("glmm.R", folder, timeout, progress)
        return [_glmm_fit(name, data[data["dataset"] == name], folder, index[name], n_boot) for name in datasets]


def _glmm_fit(dataset: str, data: pd.DataFrame, folder: Path, k: int, n_boot: int) -> QuadFit:
    coef = read_output(folder / f"coef_{k}.csv", ["term", "estimate", "se", "p"]).set_index("term")
    info = read_output(
        folder / f"info_{k}.csv", ["llf", "llf_null", "cov12", "df", "converged", "formula"], False
    ).iloc[0]
    try:
        b0, b1, b2 = (float(coef.loc[t, "estimate"]) for t in ["Intercept", "wp", "wp2"])
        se1, se2 = float(coef.loc["wp", "se"]), float(coef.loc["wp2", "se"])
        p1, p2 = float(coef.loc["wp", "p"]), float(coef.loc["wp2", "p"])
    except (KeyError, TypeError, ValueError):
        raise RuntimeError(f"Rscript output coef_{k}.csv is malformed (terms {list(coef.index)})") from None
    llf = _num(info["llf"])
    fit = QuadFit(
        dataset=dataset,
        n=len(data),
        intercept=b0,
        b1=b1,
        b2=b2,
        p_wp=p1,
        p_wp2=p2,
        p_lrt=lrt_p(llf, _num(info["llf_null"]), 2),
        critical_plw=critical_plw(b1, b2),
        method=f"{GLMM_LABEL}: {info['formula']}",
        engine="r",
        se_b1=se1,
        se_b2=se2,
        cov12=_num(info["cov12"]),
        df=_num(info["df"]),
        p_lack_of_fit=lack_of_fit(data),
        n_benchmarks=int(data["task"].nunique()),
        link="logit",
    )
    if str(info["converged"]).upper() != "TRUE":
        fit.notes.append("glmmTMB did not converge (nor did any simpler random-effects structure)")
    if str(info.get("simplified_from", "")).strip():
        fit.notes.append(f"simplified: the paper's random effects did not converge ({info['simplified_from']})")
    if str(info.get("warnings", "")).strip():
        fit.notes.append(f"R warnings: {str(info['warnings'])[:200]}")
    boot = folder / f"boot_{k}.csv"
    if n_boot > 0 and boot.exists():
        vertex = read_output(boot, ["vertex"])["vertex"].to_numpy(float)
        plw = np.where(np.isfinite(vertex), from_wp(np.clip(vertex, 0.0, 1.0)), 1.0)
        fit.boot_low, fit.boot_high = (float(x) for x in np.percentile(plw, [2.5, 97.5]))
        fit.n_boot = n_boot
    return finish(fit)


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):  # R's NA
        return float("nan")


def fit_gam(rows: pd.DataFrame, timeout: float = TIMEOUT, progress: Tick | None = None) -> gam_view.GamResult | None:
    """witune's per-run mgcv fit and the paper's mgcv GAM; same table and surface as the Python engine."""
    data = gam_view.gam_data(rows)
    if data is None:
        return None
    runs = gam_view.run_means(data)
    wp = gam_view.WP_GRID
    rgs = gam_view.rg_grid(data["rg"].unique())
    grid = pd.DataFrame(
        {"wp": np.tile(wp, len(rgs)), "w": np.tile(from_wp(wp), len(rgs)), "r": np.repeat(rgs, len(wp))}
    )
    with tempfile.TemporaryDirectory(prefix="witune-r-") as tmp:
        folder = Path(tmp)
        runs.assign(r=runs["rg"], m=runs["model"].astype(str))[["y", "wp", "r", "m"]].to_csv(
            folder / "runs.csv", index=False
        )
        pd.DataFrame(
            {"y": data["y"], "w": data["plw"], "r": data["rg"], "b": data["task"].astype(str), "m": data["model"]}
        ).to_csv(folder / "rows.csv", index=False)
        grid.to_csv(folder / "grid.csv", index=False)
        run_script("gam.R", folder, timeout, progress)
        basis = read_output(folder / "basis.csv", []).to_numpy(float)
        coef = read_output(folder / "coef.csv", ["coef"])["coef"].to_numpy(float)
        cov = read_output(folder / "vcov.csv", []).to_numpy(float)
        paper = read_output(folder / "paper.csv", ["fit"])["fit"].to_numpy(float)
        info = read_output(folder / "info.csv", ["df_resid", "edf", "formula", "paper_formula"]).iloc[0]
    n = len(wp)
    if basis.shape != (n * len(rgs), len(coef)) or cov.shape != (len(coef), len(coef)) or len(paper) != len(grid):
        raise RuntimeError("Rscript output of gam.R is malformed (shapes do not match the grid)")
    bases = [basis[i * n : (i + 1) * n] for i in range(len(rgs))]
    surface, p_raw = gam_view.curves_and_tests(bases, coef, cov, _num(info["df_resid"]))
    paper_surface = paper.reshape(len(rgs), n)
    table = gam_view.summarise(rgs, wp, surface, p_raw, float(np.ptp(data["y"])), paper_surface)
    label = (
        f"R mgcv gam({info['formula']}) on per-run means (wp scale: optimal_plw, flat test); "
        f"paper's gam({info['paper_formula']}) on raw PLW (paper_optimal_plw); Gaussian, identity link, score scale"
    )
    edf = _num(info["edf"])
    if not math.isfinite(edf):
        raise RuntimeError("Rscript output info.csv is malformed (edf)")
    return gam_view.GamResult(table, wp, rgs, surface, len(data), "r", label, len(runs))
