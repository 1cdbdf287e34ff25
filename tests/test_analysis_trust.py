"""Planted-truth tests of issue 10: diagnostics never vote, one benchmark one vote, a flat GAM is flagged
flat, the R reference engine recovers the PLW paper's beta model, and both engines agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from witune.analysis import benchmarks, correlations, engines, plw, python_engine, r_engine, wit
from witune.analysis.aggregate import add_relative
from witune.analysis.summary import analyze, to_json
from witune.analysis.synthetic import (
    PAPER_BETA,
    SyntheticSweep,
    make_beta_sweep,
    make_sweep,
)

HAVE_R, WHY_NOT_R = r_engine.r_status()
needs_r = pytest.mark.skipif(not HAVE_R, reason=f"R engine unavailable: {WHY_NOT_R}")

CONFIGS = {"A": (0.0, 1.0), "B": (0.1, 1.0), "C": (1.0, 1.0)}


def _row(run: str, bench: str, metric: str, score: float, higher: bool = True) -> dict:
    lp, lr = CONFIGS[run]
    return {
        "run_id": run,
        "model": "m",
        "dataset": "d",
        "prompt_weight": lp,
        "response_weight": lr,
        "normalization": "nonzero",
        "seed": 0,
        "benchmark": bench,
        "metric": metric,
        "score": score,
        "higher_is_better": higher,
    }


def test_role_table_scores_and_diagnostics():
    cases = {
        ("heldout", "prompt_nll"): "diagnostic",
        ("heldout", "response_nll"): "score",
        ("witune:score", "prompt_nll_per_token"): "diagnostic",
        ("witune:score", "response_nll_per_token"): "score",
        ("witune:generation_length", "mean_tokens"): "diagnostic",
        ("witune:memorization", "bleu"): "diagnostic",
        ("weight_distance", "l2"): "diagnostic",
        ("witune:winrate", "mean_tokens"): "diagnostic",
        ("witune:winrate", "win_rate"): "score",
        ("witune_arc_challenge", "acc_norm"): "score",
        ("mmlu_anatomy", "acc"): "score",
    }
    df = pd.DataFrame([{"benchmark": b, "metric": m} for b, m in cases])
    roles = benchmarks.role_table(df).set_index(["benchmark", "metric"])["role"]
    assert roles.to_dict() == cases


def test_run_best_only_on_prompt_nll_is_not_best():
    # C has by far the lowest prompt NLL (what a PLW-1 run is trained to lower) but is worst on the
    # held-out response NLL and on ARC; A is best on both scores.
    rows = []
    for run, p_nll, r_nll, arc in [("A", 3.0, 1.50, 0.40), ("B", 2.5, 1.55, 0.35), ("C", 0.5, 1.70, 0.30)]:
        rows += [
            _row(run, "heldout", "prompt_nll", p_nll, False),
            _row(run, "heldout", "response_nll", r_nll, False),
            _row(run, "arc_challenge", "acc_norm", arc),
            _row(run, "arc_challenge", "acc", arc + 0.2),
        ]
    a = analyze(pd.DataFrame(rows))
    assert a.best.iloc[0]["prompt_weight"] == 0.0  # A, not C
    assert not (a.results["metric"] == "prompt_nll").any()
    assert set(a.results["benchmark"]) == {"heldout", "arc_challenge"}
    assert set(a.results["metric"]) == {"response_nll", "acc_norm"}  # one primary metric per benchmark
    assert not (a.gains["metric"] == "prompt_nll").any() and not (a.optima["metric"] == "prompt_nll").any()
    # ... but the diagnostic is reported beside: per run, in its own column.
    assert a.runs.set_index("run_id").loc["C", "heldout:prompt_nll"] == 0.5
    roles = pd.DataFrame(to_json(a)["roles"]).set_index("metric")["role"]
    assert roles["prompt_nll"] == "diagnostic" and roles["response_nll"] == "score"


@pytest.mark.parametrize("with_group_row", [False, True])
def test_fifty_subtasks_cannot_outvote_one_benchmark(with_group_row):
    # A wins every one of 50 MMLU subtasks by a little; B wins ARC and PIQA. One vote per benchmark:
    # B wins 2 to 1. Counting subtasks as tasks (the old behaviour) A would win 50 to 2.
    rows = []
    for run, mmlu, other in [("A", 0.30, 0.30), ("B", 0.29, 0.40)]:
        rows += [_row(run, f"witune_mmlu_subject{i}", "acc", mmlu + 0.001 * i) for i in range(50)]
        if with_group_row:  # lm-eval's own size-weighted group score wins over our plain mean
            rows.append(_row(run, "witune_mmlu", "acc", mmlu))
        rows += [
            _row(run, "witune_arc_challenge", "acc_norm", other),
            _row(run, "witune_arc_challenge", "acc", 0.2),
            _row(run, "witune_piqa", "acc_norm", other),
        ]
    a = analyze(pd.DataFrame(rows))
    assert sorted(a.results["benchmark"].unique()) == ["arc_challenge", "mmlu", "piqa"]
    assert len(a.results) == 2 * 3
    agg = a.aggregates.set_index("prompt_weight")
    assert agg.loc[0.1, "relative"] == pytest.approx(2 / 3) and agg.loc[0.0, "relative"] == pytest.approx(1 / 3)
    assert a.best.iloc[0]["prompt_weight"] == 0.1
    mmlu = a.results[a.results["benchmark"] == "mmlu"].set_index("run_id")
    expected = 0.30 if with_group_row else 0.30 + 0.001 * np.mean(range(50))
    assert mmlu.loc["A", "score"] == pytest.approx(expected)
    assert mmlu.loc["A", "n_subtasks"] == (0 if with_group_row else 50)
    assert (a.subtasks["group"] == "mmlu").sum() == 2 * (50 + with_group_row)  # drill-down rows kept


def test_primary_metric_defaults_and_override():
    rows = []
    for run in ["A", "B"]:
        rows += [
            _row(run, "witune_ifeval", m, 0.5)
            for m in (
                "prompt_level_strict_acc",
                "inst_level_strict_acc",
                "prompt_level_loose_acc",
                "inst_level_loose_acc",
            )
        ]
        rows += [
            _row(run, "witune_truthfulqa_mc1", "acc", 0.2),
            _row(run, "witune_truthfulqa_mc2", "acc", 0.4),
            _row(run, "witune_bbh_navigate", "exact_match (get-answer)", 0.1),
            _row(run, "custom", "f1", 0.3),
            _row(run, "custom", "bleu", 9.0),
        ]
    bench, _ = benchmarks.one_vote(pd.DataFrame(rows))
    got = bench[bench["run_id"] == "A"].set_index("benchmark")
    assert got.loc["ifeval", "metric"] == "prompt_level_loose_acc"
    assert got.loc["truthfulqa_mc", "score"] == 0.4  # MC2, the PLW paper's TruthfulQA
    assert got.loc["bbh", "metric"] == "exact_match (get-answer)"
    assert got.loc["custom", "metric"] == "bleu"  # FALLBACK order
    over, _ = benchmarks.one_vote(pd.DataFrame(rows), {"ifeval": "inst_level_strict_acc", "custom": "f1"})
    got = over[over["run_id"] == "A"].set_index("benchmark")
    assert got.loc["ifeval", "metric"] == "inst_level_strict_acc" and got.loc["custom", "metric"] == "f1"
    with pytest.raises(ValueError, match="diagnostics"):
        benchmarks.one_vote(pd.DataFrame([_row("A", "heldout", "prompt_nll", 1.0, False)]))


def test_correlations_count_distinct_datasets():
    design = SyntheticSweep(
        models=["a", "b"],
        datasets={"d1": 0.1, "d2": 2.0, "d3": 6.0, "d4": 9.0},
        prompt_weights=[0.0, 0.01, 0.1, 0.25, 0.5, 1.0],
        opt_wp=0.3,
        opt_wp_per_rg=0.05,
        noise=0.0,
    )
    df, _ = make_sweep(design)
    opt = wit.optima(df)
    corr = correlations.correlate(opt, correlations.features_from_results(df)).iloc[0]
    assert corr["n"] == 4 and corr["n_combinations"] == 2 * 4 * 5
    # Perfectly monotone over 4 datasets: Kendall's exact p is 2/4! = 0.083, not the ~1e-9 that 40
    # "observations" would suggest.
    assert corr["kendall_tau"] == pytest.approx(1.0) and corr["p_kendall"] == pytest.approx(2 / 24)
    assert corr["spearman"] == pytest.approx(1.0) and corr["p_spearman"] == pytest.approx(2 / 24)  # exact, not 0


def _flat_design(random_state: int) -> SyntheticSweep:
    return SyntheticSweep(
        models=["a", "b"],
        datasets={"short": 0.1, "mid": 1.0, "long": 3.0},
        no_effect=["long"],
        noise=0.01,
        random_state=random_state,
    )


def _at(table: pd.DataFrame, rg: float) -> pd.Series:
    return table.set_index("rg").loc[rg]


@pytest.mark.parametrize("random_state", [0, 1])
def test_gam_flags_no_effect_dataset_flat_python(random_state):
    # Planted: a real PLW effect at Rg 0.1, none at all at Rg 3.0 (the paper's long-completion finding).
    df, _ = make_sweep(_flat_design(random_state))
    rows = plw.plw_rows(add_relative(df))
    res = python_engine.fit_gam(rows)
    assert res.engine == "python" and "score scale" in res.model and "one row per run" in res.model
    # The old failure: min-max within the no-effect dataset stretches its noise to [0, 1] and gave a
    # confident optimum; on the score scale the test sees noise of 0.01 and calls it flat.
    assert np.ptp(rows.loc[rows["dataset"] == "long", "relative"]) == pytest.approx(1.0)
    assert _at(res.table, 3.0)["flat"] and _at(res.table, 3.0)["p_flat"] > 0.05
    assert not _at(res.table, 0.1)["flat"] and _at(res.table, 0.1)["p_flat"] < 1e-3


@needs_r
def test_gam_flags_no_effect_dataset_flat_r():
    df, _ = make_sweep(_flat_design(0))
    res = r_engine.fit_gam(plw.plw_rows(add_relative(df)))
    assert res.engine == "r" and "mgcv" in res.model and "te(w, r, k = 3)" in res.model
    assert "te(wp, r, k = 3)" in res.model  # witune's wp-scale fit beside the paper's raw-PLW model
    assert _at(res.table, 3.0)["flat"] and np.isnan(_at(res.table, 3.0)["optimal_plw"])  # flat: no optimum
    assert not _at(res.table, 0.1)["flat"] and np.isfinite(_at(res.table, 0.1)["paper_optimal_plw"])


@needs_r
def test_r_engine_recovers_paper_beta_coefficients():
    # Data drawn from the paper's own beta GLMM (Table 3: 5.590 / -4.284 on the logit scale); the same
    # model in glmmTMB must recover them within 2 standard errors. The Gaussian engine cannot (other scale).
    rows = make_beta_sweep(random_state=0)
    fit = r_engine.fit_plw(rows, response="y")[0]
    assert fit.engine == "r" and "beta" in fit.model and "logit" in fit.model
    assert abs(fit.b1 - PAPER_BETA["wp"]) < 2 * fit.se_b1
    assert abs(fit.b2 - PAPER_BETA["wp2"]) < 2 * fit.se_b2
    assert 0.1 < fit.se_b1 < 1.0  # a real standard error, not a degenerate one
    py = python_engine.fit_quadratic(rows.assign(relative=rows["y"]), "short")
    assert abs(py.b1) < 2.0  # the Gaussian coefficients live on another scale: not comparable
    assert "not comparable" in py.model


@needs_r
def test_engines_agree_on_critical_plw():
    # Same min-max data, both engines: the vertex in wp agrees within 0.03 (PLW within ~±15% around 0.1).
    df, _ = make_sweep(SyntheticSweep(random_state=0))
    rows = plw.plw_rows(add_relative(df))
    py = engines.resolve_engine("python").fit_plw(rows)[0]
    r = engines.resolve_engine("r").fit_plw(rows)[0]
    assert abs(plw.to_wp(py.critical_plw) - plw.to_wp(r.critical_plw)) < 0.03
    assert abs(plw.to_wp(r.critical_plw) - 0.5) < 0.04  # and both find the planted vertex
    assert r.ci_low <= r.critical_plw <= r.ci_high and r.significant


def test_engine_resolution_without_r(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no Rscript here
    r_engine.r_status.cache_clear()
    try:
        assert engines.resolve_engine("auto").name == "python"
        with pytest.raises(RuntimeError, match="Rscript not found"):
            engines.resolve_engine("r")
    finally:
        r_engine.r_status.cache_clear()


@needs_r
def test_r_analysis_and_report_name_the_engine():
    from witune.report.html import render

    design = SyntheticSweep(
        models=["a"], benchmarks=["arc", "piqa", "wino"], with_base=False, prompt_weights=[0.0, 0.01, 0.1, 0.5, 1.0]
    )
    a = analyze(make_sweep(design)[0], engine="r")
    assert a.engine == "r" and a.fits[0].engine == "r"
    data = to_json(a)
    assert data["engine"] == "r" and "glmmTMB beta GLMM, logit link" in data["plw_fits"][0]["model"]
    text = render(a)
    assert "engine: r" in text and "glmmTMB beta GLMM, logit link" in text and "Fieller" in text


def test_engines_do_not_import_each_other_and_analysis_has_no_import_circle():
    import ast
    from pathlib import Path

    folder = Path(plw.__file__).parent
    graph = {}
    for path in folder.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("witune.analysis."):
                    names.add(node.module.split(".")[2])
                elif node.module == "witune.analysis":
                    names.update(a.name for a in node.names)
        graph[path.stem] = names & {p.stem for p in folder.glob("*.py")}
    assert "r_engine" not in graph["python_engine"] and "python_engine" not in graph["r_engine"]
    assert not ({"python_engine", "r_engine", "engines"} & (graph["plw"] | graph["gam"]))

    def reach(start, node, seen):
        for nxt in graph[node]:
            assert nxt != start, f"import circle through analysis.{start}"
            if nxt not in seen:
                seen.add(nxt)
                reach(start, nxt, seen)

    for module in graph:
        reach(module, module, set())
    scripts = {p.name for p in (folder / "r").glob("*.R")}
    assert scripts == {"glmm.R", "gam.R"} and "GLMM_R" not in (folder / "r_engine.py").read_text()
