"""Results that are not numbers or names, an Rscript that hangs or talks nonsense, and a results file of a
million rows (issue 22): one line each, nothing computed from refused input, and work linear in the rows."""

from __future__ import annotations

import os
import stat
import time

import numpy as np
import pandas as pd
import pytest

from witune.analysis import plw, r_engine
from witune.analysis.aggregate import add_relative
from witune.analysis.results import load_results
from witune.analysis.summary import analyze
from witune.analysis.synthetic import SyntheticSweep, make_sweep
from witune.cli.main import main
from witune.errors import DataError


def _sweep(**kw) -> pd.DataFrame:
    return make_sweep(SyntheticSweep(models=["m"], benchmarks=["arc", "piqa", "wino"], **kw))[0]


def _refused(capsys, path, *expect: str) -> str:
    code = main(["analyze", str(path), "--engine", "python"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for text in expect:
        assert text in err, err
    return err


def test_names_stay_names(tmp_path):
    df = _sweep(with_base=False)
    df["dataset"] = "NA"
    df["model"] = "null"
    df["benchmark"] = df["benchmark"].map({"arc": "NA", "piqa": "None", "wino": "nan"})
    df.to_csv(tmp_path / "r.csv", index=False)
    back = load_results(tmp_path / "r.csv")
    assert set(back["dataset"]) == {"NA"} and set(back["model"]) == {"null"}
    assert set(back["benchmark"]) == {"NA", "None", "nan"}
    a = analyze(back)
    assert [f.dataset for f in a.fits] == ["NA"]  # the fit runs: "NA" is a dataset, not a missing value
    assert sorted(a.results["benchmark"].unique()) == ["NA", "None", "nan"]


@pytest.mark.parametrize(
    ("column", "value", "expect"),
    [
        ("score", "inf", "not a finite number: 'inf'"),
        ("score", "-Infinity", "not a finite number"),
        ("score", "nan", "a number is needed here: 'nan'"),
        ("score", "", "a number is needed here"),
        ("prompt_weight", "-0.1", "must be >= 0"),
        ("response_weight", "inf", "not a finite number"),
        ("stderr", "-1", "must be >= 0"),
        ("rg", "lots", "not a number: 'lots'"),
        ("benchmark", "", "empty name"),
        ("run_id", " ", "empty name"),
        ("higher_is_better", "maybe", "expected true/false"),
    ],
)
def test_every_bad_field_is_one_line_naming_row_and_column(tmp_path, capsys, column, value, expect):
    df = _sweep(with_base=False).assign(stderr=0.01)
    df = df.astype({column: object})
    df.loc[[3, 7], column] = value
    df.to_csv(tmp_path / "bad.csv", index=False)
    err = _refused(capsys, tmp_path / "bad.csv", "bad.csv, line 5", f"field '{column}'", expect, "1 more row")
    assert "np.float64" not in err


def test_rscript_that_hangs_is_stopped_with_one_line(tmp_path, capsys, monkeypatch):
    fake = tmp_path / "bin" / "Rscript"
    fake.parent.mkdir()
    # answers the availability check, then hangs on the fit
    fake.write_text('#!/bin/sh\nif [ "$1" = "-e" ]; then exit 0; fi\nsleep 60\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    r_engine.r_status.cache_clear()
    try:
        _sweep().to_csv(tmp_path / "r.csv", index=False)
        start = time.monotonic()
        code = main(["analyze", str(tmp_path / "r.csv"), "--engine", "r", "--r-timeout", "2"])
        err = capsys.readouterr().err.strip()
        assert time.monotonic() - start < 30
        assert code == 2 and len(err.splitlines()) == 1 and "did not finish within 2 s" in err and "--r-timeout" in err
    finally:
        r_engine.r_status.cache_clear()


def test_rscript_exiting_0_with_malformed_output_is_one_line(tmp_path, capsys, monkeypatch):
    fake = tmp_path / "bin" / "Rscript"
    fake.parent.mkdir()
    # "succeeds" but writes a coefficient file that is not the table the engine asked for
    fake.write_text(
        '#!/bin/sh\nif [ "$1" = "-e" ]; then exit 0; fi\nprintf \'a,"b\\n1,2,3,"\\n\' > "$3/coef_0.csv"\nexit 0\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    r_engine.r_status.cache_clear()
    try:
        _sweep().to_csv(tmp_path / "r.csv", index=False)
        code = main(["analyze", str(tmp_path / "r.csv"), "--engine", "r"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
        assert "Rscript output coef_0.csv is" in err
    finally:
        r_engine.r_status.cache_clear()


def _big(runs_per_config: int) -> pd.DataFrame:
    """A results table whose rows grow with the number of runs (seeds), design fixed: 10 PLWs x 20 benchmarks."""
    df = make_sweep(
        SyntheticSweep(
            models=["m"],
            benchmarks=[f"b{i}" for i in range(20)],
            seeds=runs_per_config,
            with_base=False,
            random_state=0,
        )
    )[0]
    return df.drop(columns=["weight_distance", "memorization_bleu", "generation_length"])


def test_analyze_is_linear_in_the_rows(tmp_path):
    # 1,000,000 rows took 25 minutes without a word. Every step is linear now: 4x the rows must cost about 4x
    # (allowed up to 8x: timing noise on a shared machine; the old quadratic steps gave 16x and more).
    sizes, seconds = [], []
    for seeds in (15, 60):
        df = _big(seeds)
        path = tmp_path / f"r{seeds}.csv"
        df.to_csv(path, index=False)
        start = time.perf_counter()
        stages: list[str] = []
        a = analyze(load_results(path), progress=lambda s, d, t, seen=stages: seen.append(s))
        seconds.append(time.perf_counter() - start)
        sizes.append(len(df))
        assert a.fits and len(a.results) == len(df) and "PLW fit [python]" in stages
    ratio = (seconds[1] / seconds[0]) / (sizes[1] / sizes[0])
    assert ratio < 2.0, (sizes, seconds)


def test_plw_fit_ignores_other_response_weights_and_checks_its_fit():
    # WIT grid: the PLW design is the lambda_r = 1 rows, normalised among themselves
    df = make_sweep(SyntheticSweep(models=["m"], response_weights=[0.4, 1.0], opt_wp=0.5, noise=0.005, seeds=2))[0]
    rows = plw.plw_rows(add_relative(df))
    assert set(rows["response_weight"]) == {1.0}
    assert rows.groupby(["dataset", "task"])["relative"].agg(["min", "max"]).eq([0.0, 1.0]).all().all()
    a = analyze(df)
    assert any("only the λr = 1 rows" in n for n in a.notes)
    fit = a.fits[0]
    assert np.isfinite(fit.p_lack_of_fit) and fit.shape == "interior optimum"  # quadratic truth: no lack of fit


def test_lack_of_fit_is_detected_and_the_vertex_not_read():
    # A step, not a parabola: best for every PLW above 0.01, worst below (2 seeds: the pure error of the test).
    df = _sweep(with_base=False, noise=0.002, seeds=2)
    up = df["prompt_weight"] >= 0.01
    df["score"] = np.where(df["metric"] == "ppl", 5.0, 0.5) + np.where(up, 0.05, 0.0) * np.where(
        df["metric"] == "ppl", -1, 1
    )
    df["score"] += np.random.default_rng(0).normal(0, 0.002, len(df))
    fit = analyze(df).fits[0]
    assert fit.shape == "poor fit" and not np.isfinite(fit.best_plw)
    assert "lack of fit" in fit.reading() and any("lack of fit" in n for n in fit.notes)


def test_loading_a_results_file_refuses_nothing_it_should_accept(tmp_path):
    df = _sweep()  # base rows (empty weights), booleans, BOM from a spreadsheet
    (tmp_path / "bom.csv").write_text(df.to_csv(index=False), encoding="utf-8-sig")
    back = load_results(tmp_path / "bom.csv")
    assert back["prompt_weight"].isna().any() and back["higher_is_better"].dtype == bool
    with pytest.raises(DataError, match="duplicate row"):
        load_results(_twice(df, tmp_path))


def _twice(df: pd.DataFrame, tmp_path) -> str:
    path = tmp_path / "dup.csv"
    pd.concat([df, df.iloc[[0]]]).to_csv(path, index=False)
    return str(path)


def test_a_table_handed_over_in_python_gets_the_same_rules():
    from witune.analysis.results import validate_results

    df = _sweep(with_base=False)
    df.loc[2, "score"] = np.nan  # the NaN error used to print np.float64(nan)
    with pytest.raises(DataError, match=r"line 4, field 'score': a number is needed here: 'nan'$") as err:
        validate_results(df, "sweep")
    assert "np.float64" not in str(err.value)
    df.loc[2, "score"] = np.inf
    with pytest.raises(DataError, match="not a finite number: 'inf'"):
        validate_results(df, "sweep")
