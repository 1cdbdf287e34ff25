"""`witune recommend`: the PLW paper's Table 4 and critical value, the WIT ranges, on real shared files."""

import argparse
import json

import pytest
from shared import shared_file

from witune.stats import CRITICAL_PLW_SHORT, TABLE4, recommend, table4


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
    assert 0 <= short.lambda_p <= 0.5 and short.lambda_r == 1.0
    long = recommend(7.83)
    assert long.kind == "long-completion" and not long.weight_matters
    assert any("barely matters" in reason for reason, _ in long.reasons)
    assert {source for _, source in long.reasons} >= {"PLW paper (seed 004), Table 4", "WIT paper (seed 000)"}


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
    assert out["plw"] == (CRITICAL_PLW_SHORT if rg < 1 else table4(rg).plw)
    assert out["weight_matters"] == (rg < 1 or not table4(rg).flagged)
