"""Preference records: the accepted shapes, and one-line errors naming file, line and field for bad ones."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from witune.data.errors import ConfigError, DataError
from witune.dpo.config import load_dpo_config, to_yaml
from witune.dpo.data import load_preferences

USER = {"role": "user", "content": "Name a colour."}


def _write(tmp_path, records, name="prefs.jsonl"):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return p


def test_plain_conversational_and_implicit_prompt_shapes(tmp_path):
    plain = load_preferences(_write(tmp_path, [{"prompt": "Q: 2+2?", "chosen": " 4", "rejected": " 5"}], "a.jsonl"))
    assert not plain.conversational and plain.records == [{"prompt": "Q: 2+2?", "chosen": " 4", "rejected": " 5"}]
    # UltraFeedback-binarized layout: a string prompt repeated as the first turn of both conversations.
    uf = {
        "prompt": "Name a colour.",
        "chosen": [USER, {"role": "assistant", "content": "Blue."}],
        "rejected": [USER, {"role": "assistant", "content": "Seven."}],
    }
    conv = load_preferences(_write(tmp_path, [uf, {"prompt": [USER], "chosen": "Red.", "rejected": "No."}], "b.jsonl"))
    assert conv.conversational
    assert conv.records[0] == {
        "prompt": [USER],
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "Seven."}],
    }
    assert conv.records[1]["prompt"] == [USER] and conv.records[1]["chosen"][0]["content"] == "Red."


@pytest.mark.parametrize(
    "record, field, words",
    [
        ({"prompt": "Q", "rejected": "b"}, "chosen", "is missing"),
        ({"chosen": "a", "rejected": "b"}, "prompt", "need a prompt"),
        ({"prompt": "Q", "chosen": 3, "rejected": "b"}, "chosen", "expected a string"),
        ({"prompt": "Q", "chosen": "  ", "rejected": "b"}, "chosen", "is empty"),
        ({"prompt": "Q", "chosen": "same", "rejected": "same"}, "chosen", "no preference"),
        (
            {"prompt": [USER], "chosen": [{"role": "bot", "content": "x"}], "rejected": "y"},
            "chosen[0].role",
            "role must be",
        ),
        (
            {"prompt": [USER], "chosen": [{"role": "assistant", "content": 1}], "rejected": "y"},
            "chosen[0].content",
            "string",
        ),
        (
            {
                "chosen": [USER, {"role": "assistant", "content": "a"}],
                "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}],
            },
            "prompt",
            "share no prompt",
        ),
        ('{"prompt": "Q", "chosen": ', None, "malformed JSON"),
    ],
)
def test_bad_record_is_one_line_naming_file_line_and_field(tmp_path, record, field, words):
    good = {"prompt": "Q: 1+1?", "chosen": " 2", "rejected": " 3"}
    path = _write(tmp_path, [good, record])
    with pytest.raises(DataError) as e:
        load_preferences(path)
    msg = str(e.value)
    assert "\n" not in msg and f"{path}, line 2" in msg and words in msg
    if field:
        assert f"field '{field}'" in msg
    skipped = load_preferences(path, on_error="skip")
    assert len(skipped.records) == 1 and len(skipped.skipped) == 1


def test_mixed_shapes_are_an_error_at_the_first_record_that_differs(tmp_path):
    path = _write(
        tmp_path, [{"prompt": "Q", "chosen": "a", "rejected": "b"}, {"prompt": [USER], "chosen": "a", "rejected": "b"}]
    )
    with pytest.raises(DataError, match=r"line 2, field 'prompt': mixes shapes"):
        load_preferences(path)


def test_cli_prints_one_error_line_for_a_bad_record(tmp_path, tiny_model_dir):
    path = _write(tmp_path, [{"prompt": "Q", "chosen": "a", "rejected": "b"}, {"prompt": "Q", "chosen": "a"}])
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "witune.cli.main",
            "dpo",
            "--set",
            f"model={tiny_model_dir}",
            "--set",
            f"data={path}",
            "--set",
            f"output_dir={tmp_path / 'out'}",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error:") and f"{path}, line 2, field 'rejected': is missing" in lines[-1]
    assert "Traceback" not in r.stderr


def test_config_conventions(tmp_path):
    cfg = load_dpo_config(None, ["model=m", "data=d.jsonl", "beta=0.2"], preset="zephyr")
    assert cfg.beta == 0.2 and cfg.learning_rate == 5e-7 and cfg.preset == "zephyr"  # --set wins over the preset
    assert "# DPO beta" in to_yaml(cfg)
    with pytest.raises(ConfigError, match="unknown key"):
        load_dpo_config(None, ["model=m", "data=d", "betta=1"])
    with pytest.raises(ConfigError, match="'loss_type'"):
        load_dpo_config(None, ["model=m", "data=d", "loss_type=kto"])
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("model: m\ndata: d\nlearning_rate: 1e-6\n")
    assert load_dpo_config(yaml_file).learning_rate == 1e-6


def test_import_witune_needs_no_trl():
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'trl' or name.startswith('trl.'): raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import witune, witune.dpo, witune.cli.main\n"
        "witune.cli.main.build_parser()\n"
        "from witune.dpo.run import require_trl\n"
        "try:\n    require_trl()\nexcept Exception as e:\n    print(e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'pip install "witune[trl]"' in r.stdout


def test_sweep_dpo_keys_are_checked_when_the_grid_expands(tmp_path):
    from witune.sweep.config import sweep_config_from_dict
    from witune.sweep.grid import expand

    base = {"set": {"data": "d.jsonl"}, "weights": [[0, 1], [0.5, 1]], "output_dir": str(tmp_path)}
    plain = expand(sweep_config_from_dict(base))
    chained = expand(sweep_config_from_dict({**base, "dpo": {"data": "p.jsonl", "beta": 0.2}}))
    assert [(p.dpo.data, p.dpo.beta) for p in chained] == [("p.jsonl", 0.2)] * 2 and plain[0].dpo is None
    assert {p.run_id for p in plain}.isdisjoint(p.run_id for p in chained)  # another computation, another id
    with pytest.raises(ConfigError, match="sweep key 'dpo'.*'betta'"):
        expand(sweep_config_from_dict({**base, "dpo": {"data": "p.jsonl", "betta": 0.2}}))
    with pytest.raises(ConfigError, match=r"may not hold \['model'\]"):
        expand(sweep_config_from_dict({**base, "dpo": {"data": "p.jsonl", "model": "x"}}))


@pytest.mark.parametrize(
    "text, message",
    [
        ("learning_rate: 0\n", "'learning_rate' must be a finite number > 0"),  # training requires > 0: so does DPO
        ("learning_rate: .nan\n", "'learning_rate'"),
        ("beta: .inf\n", "'beta'"),
        ("warmup_ratio: .nan\n", "'warmup_ratio'"),
        ("label_smoothing: .nan\n", "'label_smoothing'"),
        ("max_grad_norm: .inf\n", "'max_grad_norm'"),
        ("save_every: -1\n", "'save_every'"),
        ("beta: 0.1\nbeta: 0.2\n", "duplicate key 'beta'"),  # no "last one wins"
    ],
)
def test_dpo_config_shares_the_training_checks(tmp_path, text, message):
    path = tmp_path / "dpo.yaml"
    path.write_text("model: m\ndata: d.jsonl\n" + text)
    with pytest.raises(ConfigError, match=message) as err:
        load_dpo_config(path)
    assert str(path) in str(err.value) and "line" in str(err.value)
