"""`register_evaluator`: a new `witune:<name>` becomes a valid task, and built-in names cannot be replaced."""

import pytest

from witune.eval import BUILTINS, parse_task, register_evaluator


@pytest.fixture
def restore_builtins():
    before = dict(BUILTINS)
    yield
    BUILTINS.clear()
    BUILTINS.update(before)


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
