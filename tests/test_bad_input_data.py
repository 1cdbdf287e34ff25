"""Bad input through the real CLI (issue 38): weights too large for float32, a run that diverges, span markers
that collide, weights where the format cannot carry them, errors beside the progress bar, missing loss backends.
Each case ended in a traceback, a NaN model or a silently different result before."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from shared import refused

from witune.cli.main import main

BIG = int("9" * 401)


def _chat(path: Path, n: int = 1, **extra) -> Path:
    """`n` records of one user and one assistant turn; `extra` goes into the first record (message fields under
    "user" / "assistant", record fields as they are)."""
    user, assistant = extra.pop("user", {}), extra.pop("assistant", {})
    with open(path, "w") as f:
        for i in range(n):
            record = {
                "messages": [
                    {"role": "user", "content": "the teacher explains", **(user if i == 0 else {})},
                    {"role": "assistant", "content": "the main idea of a story", **(assistant if i == 0 else {})},
                ],
                **(extra if i == 0 else {}),
            }
            f.write(json.dumps(record) + "\n")
    return path


def _train(model: Path, data: Path, out: Path, **kw) -> list[str]:
    values = dict(model=model, data=data, output_dir=out, per_device_batch_size=2, max_steps=2, progress=False)
    values.update(kw)
    return ["train"] + [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def test_weights_too_large_for_float32_are_refused_naming_the_field(tmp_path, tiny_model_dir, capsys):
    """A message weight of 1e38 or a sample weight of 1e300 trained with loss inf, then NaN, and saved a NaN model."""
    cases = [
        ({"user": {"weight": 1e38}}, "messages[0].weight"),
        ({"sample_weight": 1e300}, "sample_weight"),
        ({"assistant": {"loss_weight": 1e10}, "sample_weight": 1e10}, "messages[1].weight"),  # the product
    ]
    for extra, field in cases:
        data = _chat(tmp_path / "w.jsonl", **extra)
        refused(["inspect", data, "--model", tiny_model_dir], capsys, "w.jsonl, line 1", field, "1e+12")
    conf = tmp_path / "c.yaml"
    conf.write_text(f"data: {data}\nallow_weight_above_one: true\nprompt_weight: 1e38\n")
    refused(["train", conf, "--set", f"model={tiny_model_dir}"], capsys, "prompt weight", "1e+12")


def test_401_digit_integer_weights_are_one_line_naming_the_field(tmp_path, tiny_model_dir, capsys):
    for extra, field in (({"user": {"weight": BIG}}, "messages[0].weight"), ({"sample_weight": BIG}, "sample_weight")):
        data = _chat(tmp_path / "big.jsonl", **extra)
        refused(["inspect", data, "--model", tiny_model_dir], capsys, "big.jsonl, line 1", field)
    good = _chat(tmp_path / "good.jsonl")
    for key in ("prompt_weight", "span_weights: {think", "role_weights: {user", "normalization"):
        conf = tmp_path / "c.yaml"
        close = "}" if "{" in key else ""
        conf.write_text(f"data: {good}\n{key}: {BIG}{close}\n")
        name = key.replace(": {", ".")
        refused(["train", conf, "--print-config"], capsys, "c.yaml", f"'{name}'")


def test_a_run_stops_at_a_non_finite_step_keeping_the_last_good_checkpoint(tmp_path, tiny_model_dir, capsys):
    """A learning rate of 1e30 makes the gradient NaN by step 3: the run stops there in one line naming the step
    and its samples, never applies that update, never saves model/, and every checkpoint left is finite."""
    import torch
    from safetensors.torch import load_file

    data = _chat(tmp_path / "chat.jsonl", n=8)
    out = tmp_path / "run"
    argv = _train(tiny_model_dir, data, out, max_steps=6, save_every=1, learning_rate=1e30)
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "(not finite)" in lines[0] and "chat.jsonl, line" in lines[0], err
    step = int(lines[0].split("step ")[1].split(":")[0])
    assert f"last good checkpoint is {out / 'checkpoints' / f'step-{step - 1}'}" in lines[0]
    assert not (out / "model").exists()
    kept = sorted((out / "checkpoints").iterdir())
    assert [p.name for p in kept] == [f"step-{i}" for i in range(1, step)]
    for folder in kept:
        assert all(torch.isfinite(t).all() for t in load_file(str(folder / "model.safetensors")).values()), folder
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, step))


def test_span_markers_that_are_part_of_another_kinds_are_refused(tmp_path, tiny_model_dir, capsys):
    """`a` = ('<th', '</th') beside the built-in `<think>` took the think spans in silence (then warned that
    there was no think span)."""
    data = _chat(tmp_path / "chat.jsonl", assistant={"content": "<think>hm</think>the main idea"})
    base = ["inspect", data, "--model", tiny_model_dir, "--span-weight", "think=0.5", "--span-weight", "a=0.1"]
    for pair, part in (("<th,</th", "'<th'"), ("<think>,</a>", "'<think>'"), ("<a>,</think>", "'</think>'")):
        refused([*base, "--span-markers", f"a={pair}"], capsys, "span kind 'a'", part, "span kind 'think'")
    conf = tmp_path / "c.yaml"
    conf.write_text(f"data: {data}\nspan_markers: {{r: ['<tool', '</tool']}}\nspan_weights: {{r: 0.5}}\n")
    refused(["train", conf, "--print-config"], capsys, "'<tool'", "span kind 'tool_call'")


def test_a_weight_inside_a_self_instruct_instance_is_the_top_level_error(tmp_path, tiny_model_dir, capsys):
    """`weight` / `loss_weight` on an instance were ignored; at the top level they are an error (use
    sample_weight): the same error, naming the instance's field."""
    for key in ("weight", "loss_weight"):
        record = {"instruction": "Add.", "instances": [{"input": "1 2", "output": "3"}, {"output": "4", key: 2}]}
        data = tmp_path / "si.jsonl"
        data.write_text(json.dumps(record) + "\n")
        refused(["inspect", data, "--model", tiny_model_dir], capsys, f"instances[1].{key}", "sample_weight")


def test_a_span_error_in_alpaca_data_names_the_field_the_user_wrote(tmp_path, tiny_model_dir, capsys):
    """It named `messages[0].content` (a message witune made), with an offset into the rendered prompt."""
    cases = [
        ({"instruction": "Think <think>hard", "output": "ok"}, "field 'instruction'", "at character 6 "),
        ({"instruction": "Think", "input": "x </think>", "output": "ok"}, "field 'input'", "at character 2 "),
        ({"instruction": "a", "history": [["q", "<think>x"]], "output": "ok"}, "field 'history[0][1]'", ""),
        ({"instruction": "a", "output": "ok </think>"}, "field 'output'", "at character 3 "),
    ]
    for record, field, offset in cases:
        data = tmp_path / "alpaca.jsonl"
        data.write_text(json.dumps(record) + "\n")
        for template in ("alpaca", "chat"):
            argv = ["inspect", data, "--model", tiny_model_dir, "--span-weight", "think=0.5", "--template", template]
            refused(argv, capsys, "alpaca.jsonl, line 1", field, offset)


def _error_stands_alone(err: str) -> None:
    """The error is a line of its own, and no progress bar is drawn after it."""
    lines = [part for line in err.splitlines() for part in line.split("\r") if part.strip()]
    at = [i for i, line in enumerate(lines) if "error" in line]
    assert len(at) == 1 and lines[at[0]].startswith("error: "), err
    assert not any("tokenizing:" in line for line in lines[at[0] :]), err
    assert not any("tokenizing:" in line and "error" in line for line in err.splitlines()), err


def test_a_tokenizing_error_is_printed_after_the_progress_bar_closes(tmp_path, tiny_model_dir, capsys):
    """It was glued onto the bar ('tokenizing: 50%|...error: ...'), followed by another bar line."""
    data = _chat(tmp_path / "chat.jsonl", n=2501)
    with open(data, "a") as f:  # the last record opens a think span it never closes
        f.write(
            json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>x"}]})
        )
    out = tmp_path / "run"
    train = _train(tiny_model_dir, data, out, span_weights="{think: 0.5}", progress=True)
    assert main([str(a) for a in train]) == 2
    _error_stands_alone(capsys.readouterr().err)
    assert main([str(a) for a in ["inspect", data, "--model", tiny_model_dir, "--span-weight", "think=0.5"]]) == 2
    _error_stands_alone(capsys.readouterr().err)
    # progress: false draws no tokenizing bar at all
    assert main([str(a) for a in _train(tiny_model_dir, data, out, span_weights="{think: 0.5}")]) == 2
    err = capsys.readouterr().err
    assert "tokenizing:" not in err and "chat.jsonl, line 2502" in err, err


@pytest.mark.parametrize("backend, package", [("liger", "liger_kernel"), ("cce", "cut_cross_entropy")])
def test_a_fused_loss_backend_that_is_not_installed_is_refused_before_training(
    backend, package, tmp_path, tiny_model_dir, capsys
):
    """It was an ImportError traceback at the first step."""
    import importlib.util

    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    data = _chat(tmp_path / "chat.jsonl", n=4)
    out = tmp_path / "run"
    argv = _train(tiny_model_dir, data, out, chunked_loss=True, loss_backend=backend)
    refused(argv, capsys, "loss_backend", package, "not installed")
    assert not out.exists()


def test_training_never_writes_into_its_inputs(tmp_path, tiny_model_dir, capsys):
    import shutil

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"instruction": "Say hi.", "input": "", "output": "Hi."}) + "\n")
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    before = sorted(p.name for p in model.iterdir())
    base = ["train", "--set", f"data={data}", "--set", "max_steps=1"]
    refused([*base, "--set", f"model={model}", "--set", f"output_dir={model}/run"], capsys, "inside the input folder")
    # a run folder that holds the model it starts from: --overwrite would delete it
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "model")
    argv = [*base, "--set", f"model={run / 'model'}", "--set", f"output_dir={run}", "--overwrite"]
    refused(argv, capsys, "--overwrite would delete it")
    assert sorted(p.name for p in model.iterdir()) == before and (run / "model" / "config.json").is_file()


def test_a_weight_error_in_a_config_points_at_the_setting_at_fault(tmp_path, capsys):
    """The failing key travels in the error (it was guessed from the message: `"span" in str(e)`), so the line
    shown is the setting's own: not role_weights' (absent here) for a prompt weight, not span_weights' for a
    malformed span marker."""
    conf = tmp_path / "c.yaml"
    for body in (
        "allow_weight_above_one: true\nprompt_weight: 1e38\n",
        "span_weights: {r: 0.5}\nspan_markers: {r: [x, x]}\n",
        "prompt_weight: 0\nresponse_weight: 0\n",
    ):
        conf.write_text(f"data: d.jsonl\n{body}")
        refused(["train", conf, "--print-config"], capsys, "c.yaml, line 3:")


def test_one_weight_builder_names_each_weight_as_its_caller_does():
    from witune.data.weights import build_role_weights
    from witune.flat_config import ConfigKeyError

    weights, warned = build_role_weights(0.1, 2.0, roles={"system": 0.0}, allow_above_one=True)
    assert (weights.prompt, weights.response, dict(weights.roles)) == (0.1, 2.0, {"system": 0.0})
    assert len(warned) == 1 and warned[0].startswith("response_weight is 2")
    assert build_role_weights(plw=0.2, span_markers={"r": ["<r>", "</r>"]})[0].span_markers["r"] == ("<r>", "</r>")
    for kwargs, key, named in (
        ({"roles": {"system": 5.0}}, "role_weights", "role_weights['system'] is 5"),
        ({"roles": {"nobody": 0.5}}, "role_weights", "unknown roles"),
        ({"spans": {"r": 0.5}}, "span_weights", "no delimiters"),
        ({"spans": {"r": 0.5}, "span_markers": {"r": ("<think>", "</r>")}}, "span_markers", "span kind 'think'"),
        ({"plw": -1.0}, "plw", "plw must be"),
    ):
        with pytest.raises(ConfigKeyError, match=re.escape(named)) as e:
            build_role_weights(**kwargs)
        assert e.value.key == key
