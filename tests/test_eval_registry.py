"""`register_evaluator`: a new `witune:<name>` becomes a valid task, and built-in names cannot be replaced."""

import pytest

from witune.eval import BUILTINS, parse_task, register_evaluator
from witune.eval.builtins import DIAGNOSTICS


@pytest.fixture
def restore_builtins():
    before, declared = dict(BUILTINS), dict(DIAGNOSTICS)
    yield
    BUILTINS.clear()
    BUILTINS.update(before)
    DIAGNOSTICS.clear()
    DIAGNOSTICS.update(declared)


def test_registered_evaluator_is_a_task_and_names_are_not_replaced(restore_builtins):
    def rows(model, tok, arg, opt):
        return [{"task": "witune:echo", "metric": "arg", "value": float(arg), "stderr": None, "higher_is_better": True}]

    with pytest.raises(ValueError, match="unknown built-in"):
        parse_task("witune:echo=3")
    memorization = BUILTINS["memorization"]
    register_evaluator("echo", rows)
    assert parse_task("witune:echo=3") == ("echo", "3")
    assert BUILTINS["echo"](None, None, "3", None)[0]["value"] == 3.0
    with pytest.raises(ValueError, match="already registered"):
        register_evaluator("echo", rows)
    with pytest.raises(ValueError, match="already registered"):
        register_evaluator("memorization", rows)
    assert BUILTINS["memorization"] is memorization
    with pytest.raises(ValueError, match="without"):
        register_evaluator("a=b", rows)


def test_one_declaration_of_a_diagnostic_is_what_the_sweep_and_the_analysis_read(restore_builtins, tmp_path):
    """Adding an evaluator with a diagnostic metric touches only witune.eval: the sweep stores the row's role
    from the declaration, the results table keeps it out of the scores, the analysis reports it beside them."""
    import pandas as pd

    from witune.analysis import benchmarks
    from witune.results_schema import Diagnostics
    from witune.sweep import db
    from witune.sweep.config import sweep_config_from_dict
    from witune.sweep.grid import expand

    register_evaluator(
        "verbosity",
        lambda model, tok, arg, opt: [],
        Diagnostics("how much it says", metrics=("words",), columns={"chars": "verbosity_chars"}),
    )
    point = expand(sweep_config_from_dict({"set": {"data": "d.jsonl"}, "plw": [0.1]}))[0]
    db.add_points(tmp_path, [point])
    db.mark_running(tmp_path, point.run_id)
    rows = [
        {"task": "witune:verbosity=x", "metric": metric, "value": value, "stderr": None, "higher_is_better": True}
        for metric, value in [("words", 12.0), ("chars", 60.0), ("quality", 0.5)]
    ]
    db.finish_run(tmp_path, point.run_id, rows, [])
    roles = {m["metric"]: (m["role"], m["column"]) for m in db.metrics(tmp_path)}
    assert roles == {
        "words": ("diagnostic", None),
        "chars": ("diagnostic", "verbosity_chars"),
        "quality": ("score", None),
    }
    frame = db.results_frame(tmp_path)
    assert frame["verbosity_chars"].tolist() == [60.0, 60.0]  # a per-run column, as declared
    scores, diag = benchmarks.split_roles(frame)
    assert scores["metric"].tolist() == ["quality"] and diag["metric"].tolist() == ["words"]
    table = benchmarks.role_table(pd.DataFrame({"benchmark": ["witune:verbosity=x"], "metric": ["words"]}))
    assert table["why"].tolist() == ["how much it says"]


def test_cli_help_and_choices_are_read_from_their_registries(restore_builtins):
    """`witune eval --help` lists every registered evaluator (a copied list left out witune:robustness) with its
    argument form; --lm offers the harness's LMs and `--engine` the analysis engines, not copies of them."""
    import argparse

    from witune.analysis.engines import NAMES
    from witune.cli.main import build_parser
    from witune.eval.harness import LMS

    register_evaluator("echo", lambda model, tok, arg, opt: [], argument="=N")
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices

    def option(command: str, flag: str) -> argparse.Action:
        return next(a for a in commands[command]._actions if flag in a.option_strings)

    tasks = " ".join(str(option("eval", "--tasks").help).split())
    assert all(f"witune:{name}" in tasks for name in BUILTINS)
    assert "witune:robustness[=BENCH" in tasks and "witune:echo=N" in tasks
    assert tuple(option("eval", "--lm").choices or ()) == LMS
    assert tuple(option("analyze", "--engine").choices or ()) == NAMES
