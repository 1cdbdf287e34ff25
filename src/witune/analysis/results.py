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
from witune.results_schema import (
    DESIGN_COLUMNS,
    ITEM_COLUMNS,
    NUMERIC_COLUMNS,
    PER_RUN_DIAGNOSTICS,
    REQUIRED,
    STRUCTURE_COLUMNS,
)


def numeric_columns() -> list[str]:
    """Per-run number columns: the standard ones and every column an evaluator declares (`witune.eval`)."""
    from witune.eval.builtins import DIAGNOSTICS

    return sorted({*NUMERIC_COLUMNS, *(c for d in DIAGNOSTICS.values() for c in d.columns.values())})


NUMERIC = ["prompt_weight", "response_weight", "score"]
LOSS_COLUMNS = ["run_id", "step", "loss"]
FEATURE_COLUMNS = ["level", "name", "feature", "value"]
NAMES = ["run_id", "model", "dataset", "benchmark", "metric", "normalization", "seed", "parent", "variant"]
NONEMPTY = ["run_id", "benchmark", "metric"]  # a row without one of these cannot be placed
# Text that means "no number" in a number column (only there: in a name column "NA" is a name).
MISSING = {"", "nan", "na", "n/a", "none", "null"}
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


def load_items(path: str | Path) -> pd.DataFrame:
    """Per-item scores ``run_id, benchmark, metric, item, score`` (the noise guard pairs runs over items)."""
    path = Path(path)
    df = _read_csv(path)
    source = str(path)
    _check_columns(df, ITEM_COLUMNS, source)
    _check_rows(df, source)
    df = df.reset_index(drop=True)
    for col in ["run_id", "benchmark", "metric", "item"]:
        df[col] = _name(df, col, source, required=True)
    df["benchmark"] = df["benchmark"].str.removeprefix("witune_")
    _to_numeric(df, "score", source, allow_nan=False)
    return df


def _read_csv(path: Path) -> pd.DataFrame:
    """Every field as text (no pandas guessing): a dataset called "NA" or a model called "null" stays a name,
    and each column is then converted by its own explicit rule."""
    if not path.is_file():
        raise DataError(Location(str(path), 0, "file"), "no such file" if not path.exists() else "not a file")
    try:
        # utf-8-sig: a BOM written by a spreadsheet would otherwise become part of the first column's name.
        return pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False, na_filter=False)
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


def _fail(source: str, col: str, bad: np.ndarray, shown: pd.Series, message: str) -> None:
    """One error line for the first offending row of ``col`` (its value as text), and how many more there are."""
    rows = np.flatnonzero(bad)
    if len(rows):
        more = f" ({len(rows) - 1} more row(s) like it)" if len(rows) > 1 else ""
        value = str(shown.iloc[rows[0]])
        raise DataError(Location(source, _line(rows[0]), "line"), f"{message}: {value!r}{more}", field=col)


def _as_text(col: pd.Series) -> pd.Series:
    """A column as stripped text; a missing value handed over in a DataFrame (None, NaN) becomes ""."""
    return col.where(col.notna(), "").astype(str).str.strip()


def _name(df: pd.DataFrame, col: str, source: str, required: bool) -> pd.Series:
    """A name column as text, kept as it is ("NA", "null", "None", "nan" are names); empty only if allowed."""
    text = _as_text(df[col]) if df[col].dtype != object or df[col].isna().any() else df[col].astype(str)
    if required:
        _fail(source, col, (text.str.strip() == "").to_numpy(), text, "empty name (needed to place the row)")
    return text


def _to_numeric(df: pd.DataFrame, col: str, source: str, allow_nan: bool, low: float | None = None) -> None:
    """Convert ``col`` in place: a finite number (>= ``low``), or missing where ``allow_nan`` (empty, nan, NA,
    null, None). Text that is not a number, inf, a missing value where one is needed, or a value below ``low``
    is one error line naming the row and the column."""
    raw = df[col]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        values = raw.astype(float)
        missing = values.isna().to_numpy()
        shown = values.map(repr)
    else:
        shown = _as_text(raw)
        missing = shown.str.lower().isin(MISSING).to_numpy()
        values = pd.to_numeric(shown.where(~missing, None), errors="coerce").astype(float)
    v = values.to_numpy()
    _fail(source, col, ~missing & np.isnan(v), shown, "not a number")
    _fail(source, col, ~missing & np.isinf(v), shown, "not a finite number")
    if not allow_nan:
        _fail(source, col, missing, shown, "a number is needed here")
    if low is not None:
        _fail(source, col, ~missing & (v < low), shown, f"must be >= {low:g}")
    df[col] = values


def _to_bool(df: pd.DataFrame, col: str, source: str, allow_missing: bool = False) -> None:
    raw = df[col]
    if pd.api.types.is_bool_dtype(raw):
        return
    text = _as_text(raw).str.lower()
    true, false = text.isin(_TRUE), text.isin(_FALSE)
    missing = text.isin(MISSING) if allow_missing else pd.Series(False, index=text.index)
    _fail(source, col, (~true & ~false & ~missing).to_numpy(), _as_text(raw), "expected true/false")
    df[col] = true.where(~missing, None) if allow_missing else true


def validate_results(df: pd.DataFrame, source: str = "<results>") -> pd.DataFrame:
    """Check the schema and convert every column by an explicit rule; return a copy. Errors name line and field.

    Names stay names; scores are finite numbers; weights are finite and >= 0 (both empty: the base model);
    standard errors, item counts and per-run measurements are finite and >= 0 or empty.
    """
    _check_columns(df, REQUIRED, source)
    _check_rows(df, source)
    df = df.copy().reset_index(drop=True)
    for col in [c for c in NAMES if c in df.columns]:
        df[col] = _name(df, col, source, required=col in NONEMPTY)
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
        _to_numeric(df, col, source, allow_nan=True, low=0.0)  # NaN weights mark the base model
    _to_numeric(df, "score", source, allow_nan=False)
    numeric = numeric_columns()
    for col in [c for c in ["stderr", "n_items", *numeric] if c in df.columns]:
        _to_numeric(df, col, source, allow_nan=True, low=0.0 if col in ("stderr", "n_items") else None)
    _to_bool(df, "higher_is_better", source)
    if "weight_by_size" in df.columns:
        _to_bool(df, "weight_by_size", source, allow_missing=True)
    half_base = df["prompt_weight"].isna() != df["response_weight"].isna()
    _fail(
        source,
        "prompt_weight",
        half_base.to_numpy(),
        _as_text(df["prompt_weight"].astype(object)),
        "prompt_weight and response_weight must both be set, or both empty (base model)",
    )
    df["normalization"] = df["normalization"].replace("nan", "")
    if "parent" in df.columns:
        df["parent"] = df["parent"].str.removeprefix("witune_")
    for col in [
        c
        for c in df.columns
        if c not in REQUIRED and c not in {*numeric, *STRUCTURE_COLUMNS, "stderr"} and df[c].dtype == object
    ]:
        _maybe_numeric(df, col)  # extra columns (features): numbers when every value is one, else text
    return df


def _maybe_numeric(df: pd.DataFrame, col: str) -> None:
    text = _as_text(df[col])
    missing = text.str.lower().isin(MISSING)
    values = pd.to_numeric(text.where(~missing, None), errors="coerce").astype(float)
    if bool((values.notna() | missing).all()) and bool(np.isfinite(values[~missing]).all()):
        df[col] = values


def validate_losses(df: pd.DataFrame, source: str = "<losses>") -> pd.DataFrame:
    _check_columns(df, LOSS_COLUMNS, source)
    _check_rows(df, source)
    df = df.copy().reset_index(drop=True)
    df["run_id"] = _name(df, "run_id", source, required=True)
    _to_numeric(df, "step", source, allow_nan=False)
    _to_numeric(df, "loss", source, allow_nan=False)
    return df


def is_base(df: pd.DataFrame) -> pd.Series:
    """True on base-model rows (no fine-tuning: both weights missing)."""
    return df["prompt_weight"].isna() & df["response_weight"].isna()


def run_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run with its design columns and per-run diagnostics (first value per run)."""
    cols = DESIGN_COLUMNS
    extra = [c for c in ["rg", *PER_RUN_DIAGNOSTICS] if c in df.columns]
    return df.groupby("run_id", sort=False)[cols[1:] + extra].first().reset_index()
