"""Load sweep results as one tidy table from a CSV file, or validate a table handed over by the caller.

Schema (one row per run x benchmark x metric; the columns are owned by ``witune.results_schema``)::

    run_id, model, dataset, prompt_weight, response_weight, normalization, seed,
    benchmark, metric, score, higher_is_better
    [stderr, rg, weight_distance, memorization_bleu, generation_length, <numeric features>]

``stderr`` (optional) is the score's standard error from its evaluation (lm-eval's, witune:score's); empty
where unknown. With the seed spread it feeds the noise guard on the best configuration (``noise``).

Base-model rows (no fine-tuning) have NaN weights. Conventional instruction tuning is (0, 1).
Training losses (for the loss-RSD diagnostic) live in a second table ``run_id, step, loss``.

The analysis does not read sweep databases itself (layers point down: the sweep is not below the analysis): the
CLI reads a sweep folder through ``witune.sweep.db`` and passes the tables to ``validate_results`` /
``validate_losses``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from witune.errors import DataError, Location
from witune.results_schema import DESIGN_COLUMNS, PER_RUN_DIAGNOSTICS, REQUIRED

NUMERIC = ["prompt_weight", "response_weight", "score"]
LOSS_COLUMNS = ["run_id", "step", "loss"]
FEATURE_COLUMNS = ["level", "name", "feature", "value"]
_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


def load_results(path: str | Path) -> pd.DataFrame:
    """Read results from a CSV file (a sweep folder is read by the CLI: ``witune.workflows.read_sweep_folder``)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(
            Location(str(path), 0),
            "a sweep folder, not a results CSV: read it with "
            "witune.workflows.read_sweep_folder (the analysis does not import the sweep)",
        )
    if not path.exists():
        raise DataError(Location(str(path), 0), "no such file or folder")
    return validate_results(_read_csv(path), str(path))


def load_losses(path: str | Path) -> pd.DataFrame:
    """Training losses ``run_id, step, loss`` from a CSV."""
    path = Path(path)
    return validate_losses(_read_csv(path), str(path))


def load_features(path: str | Path) -> pd.DataFrame:
    """Extra features ``level, name, feature, value`` (numeric value) for the optimum correlations."""
    df = _read_csv(Path(path))
    _check_columns(df, FEATURE_COLUMNS, str(path))
    _check_rows(df, str(path))
    df = df.copy().reset_index(drop=True)
    _to_numeric(df, "value", str(path), allow_nan=False)
    return df


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(Location(str(path), 0, "file"), "no such file" if not path.exists() else "not a file")
    try:
        # utf-8-sig: a BOM written by a spreadsheet would otherwise become part of the first column's name.
        return pd.read_csv(path, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(Location(str(path), 0, "file"), f"not a readable CSV file ({_first_line(exc)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _check_rows(df: pd.DataFrame, source: str) -> None:
    if df.empty:
        raise DataError(Location(source, 2, "line"), "no data rows (only a header): nothing to analyse")


def _line(i: int) -> int:
    return int(i) + 2  # CSV line number: 1-based plus the header row


def _check_columns(df: pd.DataFrame, needed: list[str], source: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataError(Location(source, 1, "line"), f"missing column(s) {missing}", field=missing[0])


def _to_numeric(df: pd.DataFrame, col: str, source: str, allow_nan: bool) -> None:
    values = pd.to_numeric(df[col], errors="coerce")
    bad = values.isna() & (df[col].notna() if allow_nan else True)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(Location(source, _line(i), "line"), f"not a number: {df[col].iloc[i]!r}", field=col)
    df[col] = values.astype(float)


def _to_bool(value: object) -> bool | None:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def validate_results(df: pd.DataFrame, source: str = "<results>") -> pd.DataFrame:
    """Check the schema and types; return a copy with clean dtypes. Errors name the CSV line and field."""
    _check_columns(df, REQUIRED, source)
    _check_rows(df, source)
    df = df.copy().reset_index(drop=True)
    # The same (run, benchmark, metric) twice counts one measurement twice: every test would see twice the
    # data it has and report p-values that are far too small.
    key_cols = ["run_id", "benchmark", "metric"]
    repeated = df.duplicated(subset=key_cols, keep="first")  # True on the second and later occurrences
    if repeated.any():
        second = int(np.flatnonzero(repeated.to_numpy())[0])
        key = df.loc[second, key_cols].tolist()
        first = int(np.flatnonzero((df[key_cols] == key).all(axis=1).to_numpy())[0])
        raise DataError(
            Location(source, _line(second), "line"),
            f"duplicate row: run {key[0]!r}, benchmark "
            f"{key[1]!r}, metric {key[2]!r} already given on line {_line(first)}",
            field="run_id",
        )
    for col in ["prompt_weight", "response_weight"]:
        _to_numeric(df, col, source, allow_nan=True)  # NaN weights mark the base model
    _to_numeric(df, "score", source, allow_nan=False)
    if "stderr" in df.columns:
        _to_numeric(df, "stderr", source, allow_nan=True)
        negative = df["stderr"] < 0
        if negative.any():
            i = int(np.flatnonzero(negative.to_numpy())[0])
            raise DataError(
                Location(source, _line(i), "line"),
                f"a standard error cannot be negative: {df['stderr'].iloc[i]!r}",
                field="stderr",
            )
    flags = df["higher_is_better"].map(_to_bool)
    if flags.isna().any():
        i = int(np.flatnonzero(flags.isna().to_numpy())[0])
        raise DataError(
            Location(source, _line(i), "line"),
            f"expected true/false, got {df['higher_is_better'].iloc[i]!r}",
            field="higher_is_better",
        )
    df["higher_is_better"] = flags.astype(bool)
    half_base = df["prompt_weight"].isna() != df["response_weight"].isna()
    if half_base.any():
        i = int(np.flatnonzero(half_base.to_numpy())[0])
        raise DataError(
            Location(source, _line(i), "line"),
            "prompt_weight and response_weight must both be set, or both empty (base model)",
            field="prompt_weight",
        )
    for col in ["run_id", "model", "dataset", "benchmark", "metric", "normalization"]:
        df[col] = df[col].astype(str)
    df["normalization"] = df["normalization"].replace("nan", "")
    return df


def validate_losses(df: pd.DataFrame, source: str = "<losses>") -> pd.DataFrame:
    _check_columns(df, LOSS_COLUMNS, source)
    _check_rows(df, source)
    df = df.copy().reset_index(drop=True)
    _to_numeric(df, "step", source, allow_nan=False)
    _to_numeric(df, "loss", source, allow_nan=False)
    df["run_id"] = df["run_id"].astype(str)
    return df


def is_base(df: pd.DataFrame) -> pd.Series:
    """True on base-model rows (no fine-tuning: both weights missing)."""
    return df["prompt_weight"].isna() & df["response_weight"].isna()


def run_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run with its design columns and per-run diagnostics (first value per run)."""
    cols = DESIGN_COLUMNS
    extra = [c for c in ["rg", *PER_RUN_DIAGNOSTICS] if c in df.columns]
    return df.groupby("run_id", sort=False)[cols[1:] + extra].first().reset_index()
