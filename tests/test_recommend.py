"""`witune recommend`: the PLW paper's Table 4 and critical value, the WIT ranges, on real shared files."""

import argparse
import json

import pytest
from shared import shared_file

from witune.analysis.optimum import sweep_optimum
from witune.analysis.results import load_results
from witune.stats import CRITICAL_PLW_SHORT, TABLE4, plw_curve, recommend, table4
from witune.stats.recommend import KEEP_MASKING, MAX_SLOPE, WIT_LAMBDA_P_CENTRE


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
    assert short.kind == "short-completion" and short.weight_matters
    assert short.plw == CRITICAL_PLW_SHORT == 0.242
    # lambda_r follows WIT (1.0 best in only 18 of 75 settings); lambda_p / lambda_r is the PLW where it matters
    assert short.lambda_r == 0.7 and short.lambda_p == pytest.approx(0.242 * 0.7)
    long = recommend(7.83)
    assert long.kind == "long-completion" and not long.weight_matters and long.plw == 0.0
    assert any(KEEP_MASKING in reason for reason, _ in long.reasons)
    assert long.lambda_p == WIT_LAMBDA_P_CENTRE
    sources = {source for _, source in long.reasons}
    assert any("Table 4" in s for s in sources) and any("WIT paper" in s for s in sources)


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
    assert out["plw"] == pytest.approx(plw if matters > 0.5 else 0.0)
    assert out["weight_matters"] == (matters > 0.5)


@pytest.mark.parametrize("column", ["all", "mc", "gen"])
def test_recommendation_is_continuous_in_rg(column):
    """No jump anywhere, in particular not at the short/long boundary Rg = 1 (it used to go 0.242 -> 0.155)."""
    step = 0.001
    grid = [0.01 + i * step for i in range(int(10 / step))]
    recs = [recommend(rg, column) for rg in grid]
    eps = MAX_SLOPE * step + 1e-6  # the stated bound: at most 0.0013 per 0.001 of Rg
    for attr in ("plw", "lambda_p", "lambda_r"):
        values = [getattr(r, attr) for r in recs]
        jumps = [abs(b - a) for a, b in zip(values, values[1:])]
        assert max(jumps) <= eps, (attr, max(jumps), grid[jumps.index(max(jumps))])
    assert abs(recommend(0.999, column).plw - recommend(1.0, column).plw) <= eps


def test_the_benchmark_column_counts_at_every_rg():
    # short-completion data: before, --benchmarks was ignored below Rg 1
    assert recommend(0.5, "all").plw == 0.155 and recommend(0.5, "mc").plw == 0.155
    assert recommend(1.0, "mc").plw == 0.183 and recommend(1.0, "all").plw == 0.155
    assert recommend(0.3, "all").plw != recommend(0.3, "mc").plw  # the regression anchor is "all" only
    gen = recommend(0.5, "gen")  # Table 4 stars every Gen row up to 7.5: no effect found
    assert not gen.weight_matters and gen.plw == 0.0
    assert any(KEEP_MASKING in r for r, _ in gen.reasons)
    assert recommend(0.5, "gen").lambda_r == 0.8 != recommend(0.5, "mc").lambda_r


def test_starred_rows_say_keep_masking_not_an_arbitrary_value():
    # Rg 3.27 (AlpacaData) used to answer PLW 1.0 while the text said any PLW is fine
    for rg in (2.5, 3.27, 4.75, 7.83):
        rec = recommend(rg)
        assert rec.plw == 0.0 and not rec.weight_matters and rec.matters == 0.0
    assert table4(3.27).plw == 1.0 and table4(3.27).flagged  # the raw table is still there for reference


def test_wit_features_do_not_move_the_numbers_and_say_so():
    plain = recommend(1.2)
    featured = recommend(1.2, prompt_tokens=300.0, ngram_diversity=0.9, prompt_logprob=-4.0)
    assert (featured.plw, featured.lambda_p, featured.lambda_r) == (plain.plw, plain.lambda_p, plain.lambda_r)
    text = " ".join(r for r, _ in featured.reasons)
    assert "do NOT change the numbers" in text and "lower optimal lambda_p" in text


def test_recommend_from_sweep_recovers_a_planted_optimum(tmp_path):
    from witune.analysis.synthetic import SyntheticSweep, make_sweep

    df, _ = make_sweep(SyntheticSweep(opt_wp=0.6, noise=0.005, random_state=1))
    df.to_csv(tmp_path / "sweep.csv", index=False)
    s = sweep_optimum(load_results(tmp_path / "sweep.csv"), n_boot=40)
    planted = 0.6 ** (1 / 0.30103)  # 0.183
    assert s.significant and s.critical_plw == pytest.approx(planted, abs=0.05)
    assert s.ci_low <= planted <= s.ci_high
    rec = recommend(3.27, sweep=s)  # the tables say "keep masking" at 3.27; the user's own fit wins
    assert rec.source == "your sweep" and rec.weight_matters
    assert rec.plw == s.critical_plw and rec.plw_interval == (s.ci_low, s.ci_high)
    assert rec.lambda_p == pytest.approx(s.critical_plw * rec.lambda_r)


def test_recommend_from_sweep_without_effect_keeps_masking(tmp_path):
    from witune.analysis.synthetic import SyntheticSweep, make_sweep

    # amplitude 0.2 / (1 + Rg) is ~0.0002 at Rg 1000, far below the noise: no PLW effect planted
    df, _ = make_sweep(SyntheticSweep(datasets={"long": 1000.0}, noise=0.02, random_state=2))
    df.to_csv(tmp_path / "sweep.csv", index=False)
    s = sweep_optimum(load_results(tmp_path / "sweep.csv"), n_boot=0)
    assert not s.significant
    rec = recommend(0.5, sweep=s)  # the tables say 0.155 here; the user's data say otherwise
    assert rec.plw == 0.0 and not rec.weight_matters and KEEP_MASKING in rec.reasons[0][0]
    with pytest.raises(Exception, match="no dataset 'nope'"):
        sweep_optimum(load_results(tmp_path / "sweep.csv"), "nope")


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
            "--n-boot",
            "20",
            "--json",
        ]
    )
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "your sweep" and out["weight_matters"]
    assert out["plw"] == pytest.approx(0.5 ** (1 / 0.30103), abs=0.04)  # planted 0.1
    assert "your sweep, dataset 'short'" in out["reasons"][0][1]
