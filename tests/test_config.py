"""`witune train` configuration: YAML, presets, --set coercion, errors, annotated YAML, example configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from witune.data.errors import ConfigError
from witune.train.config import PRESETS, TrainConfig, field_docs, load_config, parse_overrides, to_yaml

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_every_field_has_a_docstring():
    docs = field_docs()
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert sorted(docs) == sorted(names)
    assert all(len(d) > 5 for d in docs.values())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_configs_parse(path):
    cfg = load_config(path)
    raw = yaml.safe_load(path.read_text())
    for key, value in raw.items():
        assert getattr(cfg, key) == pytest.approx(value) if isinstance(value, float) else getattr(cfg, key) == value


def test_example_configs_exist():
    assert {"alpaca.yaml", "wit.yaml"} <= {p.name for p in CONFIGS}


def test_presets():
    alpaca = load_config(overrides={"data": "x"}, preset="alpaca")
    assert (
        alpaca.learning_rate,
        alpaca.epochs,
        alpaca.global_batch_size,
        alpaca.lr_scheduler,
        alpaca.warmup_ratio,
        alpaca.max_length,
    ) == (2e-5, 3, 128, "cosine", 0.03, 512)
    # The preset names its normaliser (and the example config says which and why); an override still wins.
    assert PRESETS["alpaca"]["normalization"] == alpaca.normalization == "nonzero"
    assert (
        load_config(overrides={"data": "x", "normalization": "weight_sum"}, preset="alpaca").normalization
        == "weight_sum"
    )
    example = (Path(__file__).resolve().parents[1] / "configs" / "alpaca.yaml").read_text()
    assert "normalization: nonzero" in example and "does not state its normaliser" in example
    wit = load_config(overrides={"data": "x", "preset": "wit"})
    assert (wit.learning_rate, wit.epochs, wit.optimizer, wit.weight_decay, wit.lr_scheduler, wit.warmup_ratio) == (
        2e-5,
        1,
        "adamw",
        0.1,
        "cosine",
        0.01,
    )
    # later sources win over the preset
    assert load_config(overrides={"data": "x", "epochs": 2}, preset="wit").epochs == 2
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(overrides={"data": "x"}, preset="nope")
    assert set(PRESETS) == {"alpaca", "wit"}


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: d.jsonl\nlearning_rate: 1e-4\nprompt_weight: 0.5\nrole_weights: {system: 0}\n")
    cfg = load_config(p, ["prompt_weight=0.1", "epochs=2", "pack=true", "limit=null", "normalization=128"])
    assert (cfg.learning_rate, cfg.prompt_weight, cfg.epochs, cfg.pack, cfg.limit) == (1e-4, 0.1, 2, "bfd", None)
    assert cfg.role_weights == {"system": 0.0}
    assert cfg.role_weights_obj().for_segment("system", False) == 0.0
    assert load_config(overrides={"data": "x", "plw": 0.01}).role_weights_obj().prompt == 0.01


def test_unknown_key_lists_valid_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: x\nlearning_rat: 1e-4\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "learning_rat" in msg and "learning_rate" in msg and "prompt_weight" in msg and str(p) in msg
    with pytest.raises(ConfigError, match="--set: unknown key"):
        load_config(overrides=["data=x", "nope=1"])


@pytest.mark.parametrize(
    "item, match",
    [
        ("epochs=two", "key 'epochs' expects int"),
        ("pack=maybe", "key 'pack' must be none, greedy, bfd or padding_free"),
        ("learning_rate=fast", "key 'learning_rate' expects float"),
        ("optimizer=lion", "'optimizer' must be one of"),
        ("normalization=mean", "'normalization' must be one of"),
        ("per_device_batch_size=0", "per_device_batch_size"),
        ("epochs", "KEY=VALUE"),
    ],
)
def test_bad_values(item, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=["data=x", item])


def test_missing_data_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="'data' is required"):
        load_config()
    p = tmp_path / "bad.yaml"
    p.write_text("data: x\nepochs: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml, line \d+: invalid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_annotated_yaml_round_trips(tmp_path):
    cfg = load_config(overrides={"data": "x", "role_weights": {"system": 0.0}, "preset": "alpaca", "epochs": 1})
    text = to_yaml(cfg)
    assert "# lambda_p: loss weight of prompt tokens" in text
    p = tmp_path / "out.yaml"
    p.write_text(text)
    assert load_config(p) == cfg


def test_parse_overrides_values():
    assert parse_overrides(["a=1", "b=x y", "c={k: 1}", "d="]) == {"a": 1, "b": "x y", "c": {"k": 1}, "d": None}


def test_cli_print_config_and_help(capsys):
    from witune.cli.main import main

    assert main(["train", "--print-config", "--preset", "wit", "--set", "prompt_weight=0.2"]) == 0
    out = capsys.readouterr().out
    assert load_config(overrides=yaml.safe_load(out)).prompt_weight == 0.2
    assert main(["train", "--set", "data=x", "--set", "bogus=1"]) == 2
    assert "unknown key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "lambda_p: loss weight of prompt tokens" in capsys.readouterr().out


@pytest.mark.parametrize(
    "key,value",
    [
        ("adam_beta1", 2),
        ("adam_beta1", -0.1),
        ("adam_beta2", 1.0),
        ("adam_epsilon", 0),
        ("learning_rate", 0),
        ("learning_rate", ".nan"),
        ("log_every", 0),
        ("max_steps", -1),
        ("weight_decay", -0.1),
        ("max_grad_norm", -1),
        ("lora_r", -1),
        ("lora_dropout", 1.0),
        ("save_every", -1),
        ("save_total_limit", -1),
        ("data_workers", 0),
        ("global_batch_size", -8),
        ("limit", 0),
        ("format", "bogus"),
        ("template", "nope"),
        ("truncation", "middle"),
        ("prompt_weight", 1.5),
        ("response_weight", 2),
        ("plw", 3),
        ("role_weights", "{system: 2}"),
    ],
)
def test_out_of_range_fields_refused_at_load_naming_file_line_and_key(tmp_path, key, value):
    p = tmp_path / "c.yaml"
    p.write_text(
        f"data: x.jsonl\nmax_steps: 3\n{key}: {value}\n" if key != "max_steps" else f"data: x.jsonl\n{key}: {value}\n"
    )
    line = 3 if key != "max_steps" else 2
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert f"{p}, line {line}" in str(err.value) and key in str(err.value)
    with pytest.raises(ConfigError, match=f"--set {key}"):
        load_config(None, ["data=x.jsonl", f"{key}={value}"] + ([] if key == "max_steps" else ["max_steps=3"]))


def test_weights_above_one_allowed_with_the_flag_and_a_warning(tmp_path, capsys):
    cfg = load_config(None, {"data": "x", "plw": 2.0, "allow_weight_above_one": True})
    assert cfg.plw == 2.0 and "warning" in capsys.readouterr().err
    assert load_config(None, {"data": "x", "plw": 1.0}).plw == 1.0  # the boundary itself is in range


def test_duplicate_yaml_key_refused(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: x.jsonl\nprompt_weight: 0.1\nrole_weights: {system: 0, system: 1}\n")
    with pytest.raises(ConfigError, match=r"line 3: .*duplicate key 'system'"):
        load_config(p)


def test_normalization_is_parsed_once_into_a_name_or_a_number(tmp_path):
    from witune.loss import normalization_label, parse_normalization

    assert load_config(overrides=["data=x", "normalization=128"]).normalization == 128.0
    assert load_config(overrides={"data": "x", "normalization": "weight_sum"}).normalization == "weight_sum"
    for bad in ("inf", "-1", "0", "true", "mean"):
        with pytest.raises(ConfigError, match="'normalization' must be one of"):
            load_config(overrides=["data=x", f"normalization={bad}"])
    with pytest.raises(ValueError):
        parse_normalization(True)  # a YAML `yes` is not the number 1
    cfg = load_config(overrides=["data=x", "normalization=512"])
    p = tmp_path / "c.yaml"
    p.write_text(to_yaml(cfg))
    assert load_config(p) == cfg
    assert (normalization_label(512.0), normalization_label(0.5), normalization_label("tokens")) == (
        "512",
        "0.5",
        "tokens",
    )
    with pytest.raises(ConfigError, match="'normalization'"):  # a config built in Python is checked too
        TrainConfig(data="x", normalization="512").validate()


def test_every_normaliser_name_is_a_config_value():
    """Adding a normaliser touches witune.loss only: configs, the sweep and the CLI take its names from there."""
    import argparse

    import torch

    from witune.cli.common import normalization_arg
    from witune.loss import NORMALIZATIONS, normalizer_counts, normalizer_from_counts
    from witune.sweep.config import sweep_config_from_dict

    counts = normalizer_counts(torch.tensor([[1, -100, 2]]), torch.tensor([[0.5, 1.0, 0.0]]))
    assert len(counts) == len(NORMALIZATIONS)
    sweep = sweep_config_from_dict({"set": {"data": "x"}, "normalization": list(NORMALIZATIONS)})
    assert sweep.normalization == list(NORMALIZATIONS)
    for name in NORMALIZATIONS:
        assert load_config(overrides={"data": "x", "normalization": name}).normalization == name
        assert normalization_arg(name) == name and normalizer_from_counts(counts, name) >= 0
    with pytest.raises(argparse.ArgumentTypeError):
        normalization_arg("mean")
    src = Path(__file__).resolve().parents[1] / "src" / "witune"
    spelled = [
        p for p in src.rglob("*.py") if p.parent.name != "loss" and '"nonzero", "weight_sum", "tokens"' in p.read_text()
    ]
    assert not spelled, f"normaliser names restated outside witune.loss: {spelled}"
