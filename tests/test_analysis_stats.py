"""Known-answer tests of the sweep statistics (witune.analysis)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from witune.analysis import correlations, dynamics, plw, python_engine, wit
from witune.analysis.aggregate import add_relative, aggregates
from witune.analysis.python_engine import fit_gam
from witune.analysis.results import load_results
from witune.analysis.synthetic import SyntheticSweep, make_sweep
from witune.data.errors import DataError


def test_critical_plw_from_paper_coefficients():
    # PLW paper, Table 3 / section 5.2: wp 5.590, wp^2 -4.284 -> vertex wp 0.652 -> PLW 0.242.
    assert round(plw.critical_plw(5.590, -4.284), 3) == 0.242
    assert np.isclose(plw.to_wp(0.1), 0.5, atol=1e-4)  # the paper's choice of power: f(0.1) = 0.5
    assert np.isnan(plw.critical_plw(1.0, 0.5))  # convex: no maximum
    assert plw.critical_plw(5.0, -1.0) == 1.0  # vertex beyond 1: maximum on [0, 1] is at 1


@pytest.mark.parametrize("random_state", [0, 3])
def test_mixed_model_recovers_planted_optimum(random_state):
    # Planted vertex wp* = 0.5 (PLW 0.1) shared by 5 benchmarks with random slope scales, 2 models with
    # random intercepts, noise 0.01. Tolerance: |wp_hat - 0.5| < 0.04, i.e. PLW within [0.079, 0.127].
    df, _ = make_sweep(SyntheticSweep(random_state=random_state))
    rows = plw.plw_rows(add_relative(df))
    fit = python_engine.fit_quadratic(rows, "short", n_boot=12, seed=1)
    assert fit.method == "MixedLM"
    assert abs(plw.to_wp(fit.critical_plw) - 0.5) < 0.04
    assert fit.b2 < 0 and fit.p_lrt < 1e-3 and fit.significant and fit.shape == "interior optimum"
    assert fit.ci_low <= fit.critical_plw <= fit.ci_high and fit.interval.startswith("Fieller")
    assert fit.n_boot == 12 and fit.boot_low <= fit.critical_plw <= fit.boot_high


def test_no_plw_effect_is_not_significant():
    design = SyntheticSweep(random_state=2, noise=0.01)
    df, _ = make_sweep(design)
    rng = np.random.default_rng(0)
    df["score"] = np.where(df["metric"] == "ppl", 5.0, 0.5) + rng.normal(0, 0.01, len(df))  # pure noise
    fits = python_engine.fit_plw(plw.plw_rows(add_relative(df)))
    assert len(fits) == 1 and fits[0].p_lrt > 0.01 and fits[0].shape == "flat" and not fits[0].significant


def test_relative_aggregate_matches_independent_computation():
    df, _ = make_sweep(SyntheticSweep(models=["m"], prompt_weights=[0, 0.1, 1.0], response_weights=[0.5, 1.0]))
    rel = add_relative(df)
    # Independent: loop over groups by hand; lower-is-better flipped; base rows on the tuned scale.
    for _, part in df.groupby(["dataset", "benchmark"]):
        tuned = part[part["prompt_weight"].notna()]
        lo, hi = tuned["score"].min(), tuned["score"].max()
        for i, row in part.iterrows():
            x = (row["score"] - lo) / (hi - lo)
            expected = x if row["higher_is_better"] else 1 - x
            assert rel.loc[i, "relative"] == pytest.approx(expected)
    agg = aggregates(rel)
    one = agg[(agg["prompt_weight"] == 0.1) & (agg["response_weight"] == 1.0)].iloc[0]
    mask = (rel["prompt_weight"] == 0.1) & (rel["response_weight"] == 1.0)
    assert one["relative"] == pytest.approx(rel.loc[mask, "relative"].mean())
    # The simple aggregate averages the raw higher-is-better scores only (a loss and an accuracy do not average).
    assert one["simple"] == pytest.approx(df.loc[mask & df["higher_is_better"].astype(bool), "score"].mean())
    assert (~df["higher_is_better"].astype(bool)).any(), "the data must hold a lower-is-better metric"


def test_rsd_matches_hand_computation():
    loss = [2.0, 1.0, 3.0, 2.0, 2.0, 4.0]
    # Window 1: [2,1,3,2,2] mean 2, sample var (0+1+1+0+0)/4 = 0.5; window 2: [1,3,2,2,4] mean 2.4,
    # deviations -1.4, .6, -.4, -.4, 1.6 -> squares sum 1.96+.36+.16+.16+2.56 = 5.2, var 1.3.
    expected = [np.sqrt(0.5) / 2.0, np.sqrt(1.3) / 2.4]
    assert np.allclose(dynamics.window_rsd(np.array(loss)), expected)
    losses = pd.DataFrame({"run_id": "r", "step": [6, 5, 4, 3, 2, 1], "loss": loss[::-1]})  # unsorted steps
    out = dynamics.mean_rsd(losses)
    assert out.loc[0, "mean_rsd"] == pytest.approx(np.mean(expected)) and out.loc[0, "n_windows"] == 2
    assert dynamics.window_rsd(np.ones(4)).size == 0


def test_heatmap_best_cell_and_markers():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    design = SyntheticSweep(
        models=["m"], prompt_weights=[0.0, 0.1, 0.5, 1.0], response_weights=[0.4, 0.8, 1.0], opt_response=0.8, noise=0.0
    )
    df, _ = make_sweep(design)
    gains = wit.relative_gains(df)
    grid = wit.gain_grid(gains, "m", "short")
    assert wit.best_cell(grid) == (0.1, 0.8)  # planted: wp closest to 0.5 is PLW 0.1; lambda_r 0.8
    assert grid.loc[0.0, 1.0] == pytest.approx(0.0)  # IT compared with itself
    fig, ax = plt.subplots()
    wit.plot_heatmap(ax, grid, "t")
    circles = [p for p in ax.patches if isinstance(p, Circle)]
    assert len(circles) == 1
    assert tuple(circles[0].center) == (list(grid.columns).index(0.8), list(grid.index).index(0.1))
    texts = {t.get_text().split("\n")[0] for t in ax.texts}
    assert {"IT", "Base"} <= texts
    plt.close(fig)


def test_optimum_counts_and_correlations():
    design = SyntheticSweep(
        models=["a", "b"],
        datasets={"d1": 0.1, "d2": 2.0, "d3": 6.0},
        prompt_weights=[0.0, 0.01, 0.1, 0.25, 0.5, 1.0],
        response_weights=[1.0],
        opt_wp=0.3,
        opt_wp_per_rg=0.1,
        noise=0.0,
    )
    df, _ = make_sweep(design)
    opt = wit.optima(df)
    assert len(opt) == 2 * 3 * 5
    counts = wit.optimum_counts(opt).set_index("region")
    assert counts.loc["optimal λr = 1", "share"] == 1.0  # only lambda_r = 1 in the grid
    assert counts.loc["optimal λp > 0 (prompt loss helps)", "count"] == (opt["prompt_weight"] > 0).sum()
    feats = correlations.features_from_results(df)
    assert set(feats["feature"]) == {"rg"} and set(feats["level"]) == {"dataset"}
    corr = correlations.correlate(opt, feats)
    # The planted optimum grows with Rg: perfectly monotone over datasets, so positive rank correlation,
    # counted over the 3 distinct datasets (not the 30 combinations).
    assert corr.loc[0, "n"] == 3 and corr.loc[0, "n_combinations"] == 30
    assert corr.loc[0, "spearman"] == pytest.approx(1.0)


def test_gam_recovers_optimum_for_short_completions():
    design = SyntheticSweep(
        models=["a", "b"],
        datasets={"tiny": 0.05, "short": 0.1, "med": 1.0, "long": 3.0},
        opt_wp=0.5,
        opt_wp_per_rg=0.05,
        noise=0.005,
    )
    df, _ = make_sweep(design)
    res = fit_gam(plw.plw_rows(add_relative(df)))
    low = res.table.iloc[0]
    assert low["rg"] == pytest.approx(0.05)
    assert abs(plw.to_wp(low["optimal_plw"]) - design.planted_wp(0.05)) < 0.1
    assert not low["flat"]


def test_load_results_errors_name_line_and_field(tmp_path):
    df, _ = make_sweep(SyntheticSweep(models=["m"], prompt_weights=[0.0, 1.0]))
    good = tmp_path / "r.csv"
    df.to_csv(good, index=False)
    back = load_results(good)
    assert back["higher_is_better"].dtype == bool and back["prompt_weight"].isna().any()
    bad = df.copy().astype({"score": object})
    bad.loc[3, "score"] = "oops"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"bad.csv, line 5, field 'score'"):
        load_results(tmp_path / "bad.csv")
    df.drop(columns=["metric"]).to_csv(tmp_path / "nometric.csv", index=False)
    with pytest.raises(DataError, match="metric"):
        load_results(tmp_path / "nometric.csv")


def test_the_plw_exponent_is_defined_once():
    """Planted (synthetic) and fitted (plw) wp use one exponent: a second literal could drift from the first."""
    import ast
    from pathlib import Path

    src = Path(plw.__file__).resolve().parents[1]
    literals = [
        path.relative_to(src).as_posix()
        for path in sorted(src.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value == 0.30103
    ]
    assert literals == ["analysis/plw.py"], literals
