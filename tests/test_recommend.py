"""`witune recommend`: the PLW paper's Table 4 and critical value, the WIT ranges, on real shared files."""

import argparse
import json

import pytest
from shared import shared_file

from witune.analysis.optimum import sweep_optimum
from witune.analysis.results import load_results
from witune.stats import CRITICAL_PLW_SHORT, TABLE4, plw_curve, recommend, table4
from witune.stats.recommend import (
    KEEP_MASKING,
    MAX_SLOPE,
    NUMBERS,
    SRC_OURS,
    WIT_LAMBDA_P_CENTRE,
    SweepOptimum,
)


def test_table4_rows_and_stars():
    rows = {rg: cols for rg, cols in TABLE4}
    assert rows[0.5] == {"all": (0.155, False), "mc": (0.155, False), "gen": (0.292, True)}
    assert rows[2.0]["all"] == (0.239, False) and rows[2.0]["gen"] == (0.679, True)
    assert rows[8.0]["gen"] == (0.654, False)
    # Every "All" entry from Rg 2.5 on is starred (< 5% of the score range): the weight barely matters there.
    assert all(cols["all"][1] for rg, cols in TABLE4 if rg >= 2.5)
    assert table4(1.5, "mc").plw == 0.278 and not table4(1.5, "mc").flagged
    assert table4(1.75).plw == pytest.approx((0.183 + 0.239) / 2, abs=1e-3)
    assert table4(2.25).flagged


def test_short_and_long_completion_recommendations():
    short = recommend(0.082)
    # Below Rg 0.5 the 'all' curve is the 0.155 the paper states for Rg <= 1 (the regression's 0.242 is context)
    assert short.kind == "short-completion" and short.weight_matters and short.curve_plw == 0.155
    # lambda_r follows WIT (1.0 best in only 18 of 75 settings); lambda_p / lambda_r is the PLW where it matters
    assert short.lambda_r == 0.7 and short.lambda_p == pytest.approx(0.155 * 0.7) and short.plw == 0.155
    assert any(r.about == "context" and str(CRITICAL_PLW_SHORT) in r.text for r in short.reasons)
    long = recommend(7.83)
    assert long.kind == "long-completion" and not long.weight_matters and long.curve_plw == 0.0
    assert long.lambda_p == WIT_LAMBDA_P_CENTRE and long.plw == round(0.31 / 0.7, 3)
    assert "witune's midpoint" in long.reason("lambda_p").text and long.reason("lambda_p").source == SRC_OURS
    assert not any(KEEP_MASKING in r.text for r in long.reasons)  # no "keep masking" next to lambda_p 0.31
    assert "Table 4" in long.reason("lambda_p").text and "WIT paper" in long.reason("lambda_r").source


def test_recommend_cli_on_real_file(tiny_model_dir, capsys):
    from witune.cli import recommend as cli

    path = shared_file("gsm8k_train_alpaca.json")
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["recommend", str(path), "--model", str(tiny_model_dir), "--limit", "300", "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)

    from transformers import AutoTokenizer

    tiny_tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    recs = json.loads(path.read_text())[:300]
    n = lambda s: len(tiny_tokenizer.encode(s, add_special_tokens=False))  # noqa: E731
    rg = sum(n(r["output"]) for r in recs) / sum(n(r["instruction"]) + n(r["input"]) for r in recs)
    assert out["rg"] == pytest.approx(rg)
    plw, matters = plw_curve(rg, "all")
    assert out["curve_plw"] == pytest.approx(plw, abs=5e-4)
    assert out["plw"] == pytest.approx(out["lambda_p"] / out["lambda_r"], abs=5e-4)
    assert out["weight_matters"] == (matters > 0.5)


@pytest.mark.parametrize("column", ["all", "mc", "gen"])
def test_recommendation_is_continuous_in_rg(column):
    """No jump anywhere, in particular not at the short/long boundary Rg = 1 (it used to go 0.242 -> 0.155)."""
    step = 0.001
    grid = [0.01 + i * step for i in range(int(10 / step))]
    recs = [recommend(rg, column) for rg in grid]
    # The curves' slope is at most MAX_SLOPE per unit of Rg and m's at most 2 (one row, 0.5 apart), so
    # lambda_p = PLW x lambda_r + 0.31 (1 - m) and PLW = lambda_p / lambda_r move by at most these per 0.001,
    # plus the printed rounding (3 decimals for the curve and m, 4 for lambda_p).
    bounds = {
        "curve_plw": MAX_SLOPE * step + 1e-3,
        "lambda_p": (MAX_SLOPE * 0.8 + 0.31 * 2) * step + 2e-3,
        "plw": (MAX_SLOPE + 0.31 * 2 / 0.7) * step + 2e-3,
        "lambda_r": 0.0,
    }
    for attr, eps in bounds.items():
        values = [getattr(r, attr) for r in recs]
        jumps = [abs(b - a) for a, b in zip(values, values[1:])]
        assert max(jumps) <= eps + 1e-9, (attr, max(jumps), grid[jumps.index(max(jumps))])
    assert abs(recommend(0.999, column).plw - recommend(1.0, column).plw) <= bounds["plw"]


def test_the_benchmark_column_counts_at_every_rg():
    # short-completion data: before, --benchmarks was ignored below Rg 1
    assert recommend(0.5, "all").curve_plw == 0.155 and recommend(0.5, "mc").curve_plw == 0.155
    assert recommend(1.0, "mc").curve_plw == 0.183 and recommend(1.0, "all").curve_plw == 0.155
    gen = recommend(0.5, "gen")  # Table 4 stars every Gen row up to 7.5: no effect found
    assert not gen.weight_matters and gen.curve_plw == 0.0 and gen.lambda_p == WIT_LAMBDA_P_CENTRE
    assert recommend(0.5, "gen").lambda_r == 0.8 != recommend(0.5, "mc").lambda_r


def test_starred_rows_follow_wit_not_an_arbitrary_table_value():
    # Rg 3.27 (AlpacaData) used to answer PLW 1.0 while the text said any PLW is fine
    for rg in (2.5, 3.27, 4.75, 7.83):
        rec = recommend(rg)
        assert rec.curve_plw == 0.0 and not rec.weight_matters and rec.matters == 0.0
        assert rec.lambda_p == WIT_LAMBDA_P_CENTRE and rec.plw == round(rec.lambda_p / rec.lambda_r, 3)
    assert table4(3.27).plw == 1.0 and table4(3.27).flagged  # the raw table is still there for reference


NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"


def _evaluate(expression: str) -> float:
    """A printed formula's right-hand side with its names dropped ("PLW curve 0.155 x lambda_r 0.7 + ...")."""
    import re

    text = re.sub(r"[A-Za-z_]+(?: [a-z]+)?(?= -?\d)", "", expression).replace(" x ", " * ")
    assert re.fullmatch(r"[\d.\s*/+()e-]+", text), (expression, text)
    return float(eval(text))  # digits and operators only (checked above)


def _check_coherent(rec) -> None:
    import re

    shown = {"lambda_p": rec.lambda_p, "lambda_r": rec.lambda_r, "plw": rec.plw}
    for name in NUMBERS:  # exactly one reason per recommended number, and it names the number as printed
        mine = [r for r in rec.reasons if r.about == name]
        assert len(mine) == 1, (name, [r.text for r in rec.reasons])
        label = "PLW" if name == "plw" else name
        head = re.match(rf"{label} ({NUMBER})", mine[0].text)
        assert head and float(head.group(1)) == pytest.approx(shown[name], abs=5e-4), (name, mine[0].text)
        formula = re.match(rf"{label} {NUMBER} = ([^:;]+)", mine[0].text)
        if formula:  # every printed formula evaluates to its printed value
            assert _evaluate(formula.group(1)) == pytest.approx(float(head.group(1)), abs=6e-4), mine[0].text
    text = " ".join(r.text for r in rec.reasons)
    if KEEP_MASKING in text:  # "keep masking" only ever next to a zero prompt weight
        assert rec.lambda_p == 0 and rec.plw == 0
    assert rec.plw == pytest.approx(rec.lambda_p / rec.lambda_r, abs=5e-4)
    assert 0 <= rec.lambda_p <= 1 and 0 < rec.lambda_r <= 1


@pytest.mark.parametrize("column", ["all", "mc", "gen"])
def test_no_contradiction_on_a_grid_of_rg(column):
    for rg in [0.03, 0.082, 0.3, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.1, 2.25, 2.5, 3.27, 4.4, 6.0, 7.83, 8.0, 12]:
        rec = recommend(rg, column)
        _check_coherent(rec)
        t4 = [r for r in rec.reasons if r.source.startswith("PLW paper") and r.about != "context"]
        assert all(rec.matters > 0 for _ in t4)  # Table 4 is credited only where its effect enters the number


def test_sweep_recommendations_are_coherent_for_every_shape():
    base = dict(
        dataset="d", reading="r", ci_low=0.1, ci_high=0.3, interval="Fieller", p_value=0.01, n_scores=50, method="m"
    )
    cases = {
        "interior optimum": 0.2,
        "increasing": 1.0,
        "decreasing": 0.0,
        "U-shaped": 1.0,
        "flat": float("nan"),
    }
    for shape, best in cases.items():
        rec = recommend(0.5, sweep=SweepOptimum(shape=shape, best_plw=best, **base))
        _check_coherent(rec)
        assert rec.source == "your sweep" and rec.lambda_r == 1.0
        assert rec.plw == (0.0 if shape == "flat" else best)
        assert all(r.about == "context" for r in rec.reasons if r.source.startswith("PLW paper"))
        assert any(r.text.startswith("not used: the papers'") for r in rec.reasons)
    grid = SweepOptimum(shape="flat", best_plw=float("nan"), best_lambda_p=0.2, best_lambda_r=0.8, **base)
    rec = recommend(3.0, sweep=grid)
    _check_coherent(rec)
    assert (rec.lambda_p, rec.lambda_r, rec.plw) == (0.2, 0.8, 0.25)
    untested = recommend(0.5, sweep=SweepOptimum(shape="could not be tested", best_plw=float("nan"), **base))
    assert untested.source == "papers" and "the papers' recommendation below stands" in untested.reasons[0].text


def test_wit_features_do_not_move_the_numbers_and_say_so():
    plain = recommend(1.2)
    featured = recommend(1.2, prompt_tokens=300.0, ngram_diversity=0.9, prompt_logprob=-4.0)
    assert (featured.plw, featured.lambda_p, featured.lambda_r) == (plain.plw, plain.lambda_p, plain.lambda_r)
    text = " ".join(r.text for r in featured.reasons)
    assert "do NOT change the numbers" in text and "lower optimal lambda_p" in text


def test_recommend_from_sweep_recovers_a_planted_optimum(tmp_path):
    from witune.analysis.synthetic import SyntheticSweep, make_sweep

    df, _ = make_sweep(SyntheticSweep(opt_wp=0.6, noise=0.005, random_state=1))
    df.to_csv(tmp_path / "sweep.csv", index=False)
    s = sweep_optimum(load_results(tmp_path / "sweep.csv"))
    planted = 0.6 ** (1 / 0.30103)  # 0.183
    assert s.shape == "interior optimum" and s.best_plw == pytest.approx(planted, abs=0.05)
    assert s.ci_low <= planted <= s.ci_high and s.interval.startswith("Fieller")
    rec = recommend(3.27, sweep=s)  # the tables find no PLW effect at 3.27; the user's own fit wins
    assert rec.source == "your sweep" and rec.weight_matters
    assert rec.plw == s.best_plw and rec.plw_interval == (s.ci_low, s.ci_high)
    assert (rec.lambda_p, rec.lambda_r) == (s.best_plw, 1.0)  # the sweep's own domain: response weight 1
    _check_coherent(rec)


def test_recommend_from_sweep_without_effect_keeps_masking(tmp_path):
    from witune.analysis.synthetic import SyntheticSweep, make_sweep

    # amplitude 0.2 / (1 + Rg) is ~0.0002 at Rg 1000, far below the noise: no PLW effect planted
    df, _ = make_sweep(SyntheticSweep(datasets={"long": 1000.0}, noise=0.02, random_state=2))
    df.to_csv(tmp_path / "sweep.csv", index=False)
    s = sweep_optimum(load_results(tmp_path / "sweep.csv"))
    assert not s.significant and s.shape == "flat"
    rec = recommend(0.5, sweep=s)  # the tables say 0.155 here; the user's data say otherwise
    assert rec.plw == 0.0 and rec.lambda_p == 0.0 and not rec.weight_matters
    assert KEEP_MASKING in rec.reason("plw").text
    _check_coherent(rec)
    with pytest.raises(Exception, match="no dataset 'nope'"):
        sweep_optimum(load_results(tmp_path / "sweep.csv"), "nope")


def test_a_rising_effect_is_an_effect_not_no_effect(tmp_path):
    # Planted: scores rise with the PLW over the whole range (vertex at wp 1). The old reading required
    # b2 < 0 and said "no significant PLW effect (p = 1e-06) ... keep masking".
    from witune.analysis.synthetic import SyntheticSweep, make_sweep

    df, _ = make_sweep(SyntheticSweep(opt_wp=1.0, noise=0.005, random_state=4))
    s = sweep_optimum(load_results(_csv(df, tmp_path)))
    assert s.shape == "increasing" and s.best_plw == 1.0 and s.p_value < 1e-3
    rec = recommend(0.5, sweep=s)
    assert rec.plw == 1.0 and rec.lambda_p == 1.0 and "rise with the PLW" in rec.reason("plw").text
    _check_coherent(rec)


def _csv(df, tmp_path):
    df.to_csv(tmp_path / "sweep.csv", index=False)
    return tmp_path / "sweep.csv"


def test_recommend_cli_from_sweep_picks_the_data_by_name(tiny_model_dir, tmp_path, capsys):
    from witune.analysis.synthetic import SyntheticSweep, make_sweep
    from witune.cli import recommend as cli

    df, _ = make_sweep(SyntheticSweep(datasets={"short": 0.1, "other": 5.0}, opt_wp=0.5, noise=0.005))
    df.to_csv(tmp_path / "sweep.csv", index=False)
    recs = json.loads(shared_file("gsm8k_train_alpaca.json").read_text())[:50]
    data = tmp_path / "short.json"  # its stem is the sweep's dataset label
    data.write_text(json.dumps(recs))
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "recommend",
            str(data),
            "--model",
            str(tiny_model_dir),
            "--from",
            str(tmp_path / "sweep.csv"),
            "--json",
        ]
    )
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "your sweep" and out["weight_matters"]
    assert out["plw"] == pytest.approx(0.5 ** (1 / 0.30103), abs=0.04)  # planted 0.1
    assert "your sweep, dataset 'short'" in out["reasons"][0]["source"]
