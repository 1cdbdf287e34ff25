"""One benchmark, one vote, on the suites people run now (issue 19): lm-eval's own group structure stored with a
sweep, and inference for a CSV without it, never merging benchmarks lm-eval keeps apart."""

from __future__ import annotations

import pandas as pd
import pytest

from witune.analysis import benchmarks, groups
from witune.analysis.results import validate_results
from witune.analysis.summary import analyze
from witune.eval.harness import results_to_rows
from witune.sweep import db

BBH = [f"leaderboard_bbh_{name}" for name in ("boolean_expressions", "navigate", "snarks", "web_of_lies")]
BBH += [f"leaderboard_bbh_task{i}" for i in range(20)]  # 24 subtasks, as in the Open LLM Leaderboard v2
CONFIGS = {"A": (0.0, 1.0), "B": (0.1, 1.0), "C": (1.0, 1.0)}


def lm_eval_results(config: str) -> dict:
    """A `simple_evaluate` result in lm-eval's own layout: leaderboard_bbh (group row + 24 subtasks), ARC, PIQA.
    A is ahead by a little on every BBH subtask; B is clearly ahead on ARC and PIQA."""
    bbh = 0.40 + (0.01 if config == "A" else 0.0)
    other = 0.50 + (0.10 if config == "B" else 0.0)
    results = {t: {"alias": t, "sample_len": 100, "acc_norm,none": bbh, "acc_norm_stderr,none": 0.02} for t in BBH}
    results["leaderboard_bbh"] = {
        "alias": "bbh",
        "sample_len": 2400,
        "acc_norm,none": bbh,
        "acc_norm_stderr,none": 0.004,
    }
    for t in ("arc_challenge", "piqa"):
        results[t] = {"alias": t, "acc,none": other - 0.05, "acc_norm,none": other, "acc_norm_stderr,none": 0.01}
    return {
        "results": results,
        "group_subtasks": {"leaderboard_bbh": list(BBH), "arc_challenge": [], "piqa": []},
        "n-samples": {t: {"original": 100, "effective": 100} for t in BBH},
        "higher_is_better": {},
    }


def sweep_folder(tmp_path, configs=CONFIGS, seeds=(0, 1)):
    """A sweep database written the way a sweep writes it (results_to_rows -> db), points labelled."""
    import json

    path = db.db_path(tmp_path)
    for name, (lp, lr) in configs.items():
        for seed in seeds:
            run = f"{name}{seed}"
            rows = results_to_rows(lm_eval_results(name), {"leaderboard_bbh": True})
            db.write_eval_rows(path, run, rows, new_run=True)
            labels = {"model": "m", "dataset": "d", "prompt_weight": lp, "response_weight": lr, "seed": seed}
            with db.transaction(path) as conn:
                point = {"run_id": run, "train": {}, "labels": labels, "eval": {}}
                conn.execute("UPDATE runs SET point = ? WHERE run_id = ?", (json.dumps(point), run))
    return validate_results(db.results_frame(tmp_path), str(tmp_path))


def test_leaderboard_bbh_votes_once_against_arc_and_piqa(tmp_path):
    frame = sweep_folder(tmp_path)
    bbh = frame[frame["benchmark"] == "leaderboard_bbh_navigate"].iloc[0]
    assert bbh["parent"] == "leaderboard_bbh" and bbh["n_items"] == 100  # stored from lm-eval's own structure
    assert frame.loc[frame["benchmark"] == "leaderboard_bbh", "weight_by_size"].iloc[0] == True  # noqa: E712
    a = analyze(frame)
    assert sorted(a.results["benchmark"].unique()) == ["arc_challenge", "leaderboard_bbh", "piqa"]
    assert a.best.iloc[0]["prompt_weight"] == 0.1  # B wins 2 votes to 1; with 28 "benchmarks" A won 25 to 2
    assert a.results.loc[a.results["benchmark"] == "leaderboard_bbh", "n_subtasks"].eq(0).all()  # its group row


def test_lm_eval_suites_are_split_into_their_benchmarks():
    # lm-eval's `leaderboard` group holds benchmarks whose leaves share no metric: each child is one benchmark.
    rows = []
    for task, parent, metric in [
        ("leaderboard_bbh_navigate", "leaderboard_bbh", "acc_norm"),
        ("leaderboard_bbh", "leaderboard", "acc_norm"),
        ("leaderboard_math_algebra_hard", "leaderboard_math_hard", "exact_match"),
        ("leaderboard_math_hard", "leaderboard", "exact_match"),
        ("leaderboard_ifeval", "leaderboard", "prompt_level_strict_acc"),
        ("leaderboard", "", "acc_norm"),
    ]:
        rows.append({"task": task, "parent": parent, "metric": metric})
    s = groups.structure(pd.DataFrame(rows)).set_index("task")["benchmark"]
    assert s["leaderboard_bbh_navigate"] == "leaderboard_bbh" and s["leaderboard_math_algebra_hard"] == (
        "leaderboard_math_hard"
    )
    assert s["leaderboard_ifeval"] == "leaderboard_ifeval"


def _row(run: str, bench: str, score: float, metric: str = "acc", **extra) -> dict:
    lp = {"A": 0.0, "B": 0.1}[run[0]]
    return {
        "run_id": run,
        "model": "m",
        "dataset": "d",
        "prompt_weight": lp,
        "response_weight": 1.0,
        "normalization": "",
        "seed": 0,
        "benchmark": bench,
        "metric": metric,
        "score": score,
        "higher_is_better": True,
        **extra,
    }


def test_mmlu_pro_is_never_folded_into_mmlu():
    rows = [_row(r, b, 0.5) for r in "AB" for b in ("mmlu", "mmlu_anatomy", "mmlu_pro_law", "mmlu_pro_biology")]
    bench, _ = benchmarks.one_vote(pd.DataFrame(rows))
    assert sorted(bench["benchmark"].unique()) == ["mmlu", "mmlu_pro"]


def test_category_rows_are_groups_not_subtasks_without_the_top_row():
    # Two identical models; without the top `mmlu` row the category rows used to be averaged with the subjects
    # (0.436 vs 0.600). The benchmark is the mean of the subjects, the same for both.
    rows = []
    for run, cats in [("A", 0.9), ("B", 0.1)]:  # category rows that disagree: they must not enter the mean
        rows += [_row(run, f"mmlu_{s}", 0.4 + 0.1 * i) for i, s in enumerate(["anatomy", "astronomy", "law"])]
        rows += [_row(run, f"mmlu_{c}", cats) for c in ("stem", "humanities", "social_sciences", "other")]
    bench, notes = benchmarks.fold(pd.DataFrame(rows))[0::2]
    scores = bench.set_index("run_id")["score"]
    assert scores["A"] == pytest.approx(0.5) == scores["B"]
    assert any("item counts are unknown" in n for n in notes)  # size-weighting impossible: said, not hidden


def test_subtask_mean_is_weighted_by_size_where_lm_eval_weights():
    rows = [
        _row("A", "mmlu_anatomy", 0.2, n_items=100, parent="mmlu_stem"),
        _row("A", "mmlu_law", 0.8, n_items=300, parent="mmlu_humanities"),
        _row("A", "mmlu_stem", 0.2, n_items=100, parent="mmlu"),
        _row("A", "mmlu_humanities", 0.8, n_items=300, parent="mmlu"),
    ]
    df = validate_results(pd.DataFrame(rows).assign(weight_by_size=""))
    bench, _ = benchmarks.one_vote(df)
    assert bench["score"].iloc[0] == pytest.approx((0.2 * 100 + 0.8 * 300) / 400)  # lm-eval's own estimand


def test_runs_with_and_without_the_group_row_are_never_mixed():
    rows = [_row("A1", "mmlu", 0.50)] + [_row("A1", f"mmlu_s{i}", 0.3) for i in range(3)]
    rows += [_row("B1", f"mmlu_s{i}", 0.6) for i in range(3)]  # no group row for this run
    rows += [_row("A2", "mmlu", 0.55)]  # only the group row
    bench, _, notes = benchmarks.fold(pd.DataFrame(rows))
    kinds = bench.set_index("run_id")["benchmark"]
    assert kinds["A1"] == "mmlu" and kinds["A2"] == "mmlu" and kinds["B1"] == "mmlu (subtask mean)"
    assert any("never mixed" in n for n in notes)
    # every run has the subtasks (or the group row) -> one estimand for all
    both = [r for r in rows if r["run_id"] != "A2"]
    bench, _, notes = benchmarks.fold(pd.DataFrame(both))
    assert set(bench["benchmark"]) == {"mmlu"} and bench["n_subtasks"].eq(3).all()


def test_a_user_mapping_folds_tasks_the_results_do_not_group():
    rows = [_row(r, f"mysuite_part{i}", 0.1 * i) for r in "AB" for i in range(5)] + [_row("A", "arc", 0.4)]
    bench, _ = benchmarks.one_vote(pd.DataFrame(rows), groups={"mysuite_*": "mysuite"})
    assert sorted(bench["benchmark"].unique()) == ["arc", "mysuite"]


@pytest.mark.slow
def test_the_harness_stores_lm_evals_own_structure(tmp_path, tiny_model_dir, shared_data):
    # Real lm-eval on witune's local MMLU group (57 subjects, one item each) and PIQA: the group's
    # weight_by_size comes from lm-eval's own group config, the parents from its group_subtasks.
    from witune.eval.harness import run_harness

    rows = run_harness(str(tiny_model_dir), ["witune_mmlu", "witune_piqa"], limit=1, num_fewshot=0)
    by = {(r["task"], r["metric"]): r for r in rows}
    assert by[("witune_mmlu", "acc")]["weight_by_size"] is True and by[("witune_mmlu", "acc")]["n_items"] == 57
    assert by[("witune_mmlu_anatomy", "acc")]["parent"] == "witune_mmlu"
    db.write_eval_rows(db.db_path(tmp_path), "r", rows, new_run=True)
    frame = db.results_frame(tmp_path)
    bench, _ = benchmarks.one_vote(validate_results(frame.assign(prompt_weight=0.0, response_weight=1.0)))
    assert sorted(bench["benchmark"].unique()) == ["mmlu", "piqa"]
