"""The analysis engines behind one interface: ``python`` (statsmodels + pygam) and ``r`` (the PLW paper's own
glmmTMB and mgcv models). Neither engine imports the other; both import the shared views (``plw``, ``gam``).

Adding an analysis engine: a module with ``fit_plw(rows, n_boot, seed, progress)`` and ``fit_gam(rows)``
(the shapes below), and one entry in ``resolve_engine``. Nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from witune.errors import ConfigError

if TYPE_CHECKING:  # types only: the CLI reads NAMES for its choices without loading pandas and the fits
    import pandas as pd

    from witune.analysis.gam import GamResult
    from witune.analysis.plw import QuadFit

Tick = Callable[[], None]
NAMES = ("auto", "r", "python")


@dataclass(frozen=True)
class Engine:
    """An engine: its name and its two fits (on ``plw.plw_rows`` of the one-vote results)."""

    name: str
    fit_plw: Callable[..., list[QuadFit]]  # (rows, n_boot=0, seed=0, progress=None) -> fits
    fit_gam: Callable[..., GamResult | None]  # (rows) -> GAM result, None when the design cannot support it
    min_rg_levels: int = 2  # distinct Rg the engine's GAM needs


def python_engine() -> Engine:
    from witune.analysis import python_engine as py

    return Engine("python", py.fit_plw, py.fit_gam)


def r_engine(timeout: float | None = None) -> Engine:
    from witune.analysis import r_engine as r

    limit = r.TIMEOUT if timeout is None else timeout

    def fit_plw(rows: pd.DataFrame, n_boot: int = 0, seed: int = 0, progress: Tick | None = None) -> list[QuadFit]:
        return r.fit_plw(rows, n_boot=n_boot, seed=seed, progress=progress, timeout=limit)

    def fit_gam(rows: pd.DataFrame) -> GamResult | None:
        return r.fit_gam(rows, timeout=limit)

    return Engine("r", fit_plw, fit_gam, min_rg_levels=3)  # mgcv's te(w, r, k=3) needs 3 distinct Rg


def r_available() -> tuple[bool, str]:
    from witune.analysis import r_engine as r

    return r.r_status()


def resolve_engine(name: str, r_timeout: float | None = None) -> Engine:
    """``auto`` -> R when ``Rscript`` with glmmTMB and mgcv is present, else Python; ``r`` without R raises."""
    if name not in NAMES:
        raise ConfigError(f"unknown engine {name!r} (auto, r or python)")
    if r_timeout is not None and not r_timeout > 0:
        raise ConfigError(f"--r-timeout must be > 0 seconds, got {r_timeout}")
    if name == "python":
        return python_engine()
    ok, why = r_available()
    if name == "r" and not ok:
        raise RuntimeError(f"--engine r: {why}")
    return r_engine(r_timeout) if ok else python_engine()
