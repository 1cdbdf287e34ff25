"""Bad input through the real CLI: one error line naming file, line and field, never a traceback, and never a
silently different result. Each case here ended in a traceback or was accepted silently before issue 11."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from shared import refused, run_cli

RECORD = {"instruction": "Add the numbers.", "input": "2 3", "output": "5"}


@pytest.fixture
def good(tmp_path: Path) -> Path:
    p = tmp_path / "good.jsonl"
    p.write_text(json.dumps(RECORD) + "\n")
    return p


def _config(tmp_path: Path, good: Path, text: str, name: str = "c.yaml", raw: bytes | None = None) -> Path:
    p = tmp_path / name
    if raw is not None:
        p.write_bytes(raw)
    else:
        p.write_text(f"data: {good}\n{text}")
    return p


def _sweep(tmp_path: Path, good: Path, text: str) -> Path:
    p = tmp_path / "sweep.yaml"
    p.write_text(f"set: {{data: {good}}}\n{text}")
    return p


# --- tracebacks where a line is due ---------------------------------------------------------------------


def test_tracebacks_become_one_line(tmp_path, good, tiny_model_dir, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    refused(["inspect", deep, "--model", tiny_model_dir], capsys, "deep.json", "line 1", "nested too deeply")

    parquet = tmp_path / "bad.parquet"
    parquet.write_bytes(b"not parquet at all")
    refused(["inspect", parquet, "--model", tiny_model_dir], capsys, "bad.parquet", "Parquet")

    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF? no")
    refused(["inspect", good, "--model", gguf], capsys, "fake.gguf")

    refused(["inspect", good, "--model", tiny_model_dir, "--format", "bogus"], capsys, "--format", "bogus")
    refused(["inspect", good, "--model", tiny_model_dir, "--max-length", "0"], capsys, "--max-length")
    refused(["score", good, "--model", tiny_model_dir, "--batch-size", "0"], capsys, "--batch-size")

    folder = tmp_path / "out_is_a_folder"
    folder.mkdir()
    refused(["inspect", good, "--model", tiny_model_dir, "--json", folder], capsys, str(folder), "folder")

    # rich markup in user text must not crash the error printer itself
    odd = tmp_path / "x[/]y[bold].jsonl"
    refused(["inspect", odd, "--model", tiny_model_dir], capsys, "x[/]y[bold].jsonl", "file not found")


def test_config_tracebacks_name_file_line_and_key(tmp_path, good, capsys):
    latin = _config(tmp_path, good, "", raw=f"data: {good}\n# caf\xe9 au lait\n".encode("latin-1"))
    refused(["train", latin, "--print-config"], capsys, str(latin), "line 2", "UTF-8")
    beta = _config(tmp_path, good, "max_steps: 1\nadam_beta1: 2\n")
    refused(["train", beta, "--print-config"], capsys, str(beta), "line 3", "adam_beta1")
    log = _config(tmp_path, good, "log_every: 0\n")
    refused(["train", log, "--print-config"], capsys, str(log), "line 2", "log_every")
    refused(
        ["train", "--set", f"data={good}", "--set", "learning_rate=0", "--print-config"], capsys, "--set learning_rate"
    )


def test_analyze_input_files_checked(tmp_path, capsys):
    from witune.analysis.synthetic import SyntheticSweep, make_sweep

    results, _ = make_sweep(
        SyntheticSweep(
            models=["m"],
            datasets={"d": 0.1},
            benchmarks=["arc"],
            prompt_weights=[0.0, 0.1, 1.0],
            response_weights=[1.0],
            steps=3,
        )
    )
    csv_path = tmp_path / "results.csv"
    results.to_csv(csv_path, index=False)
    refused(
        ["analyze", csv_path, "--bootstrap", "0", "--losses", tmp_path / "nolosses.csv"],
        capsys,
        "nolosses.csv",
        "no such file",
    )
    refused(
        ["analyze", csv_path, "--bootstrap", "0", "--features", tmp_path / "nofeatures.csv"],
        capsys,
        "nofeatures.csv",
        "no such file",
    )
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.db").write_bytes(b"this is not an SQLite file" * 100)
    refused(["analyze", sweep, "--bootstrap", "0"], capsys, "sweep.db", "not a usable")


def test_corrupt_sweep_db_refused_before_eval_runs(tmp_path, good, tiny_model_dir, capsys):
    db = tmp_path / "sweep.db"
    db.write_bytes(b"garbage" * 1000)
    code, out, err = run_cli(
        [
            "eval",
            tiny_model_dir,
            "--tasks",
            f"witune:generation_length={good}",
            "--max-new-tokens",
            "2",
            "--db",
            db,
            "--run-id",
            "r1",
        ],
        capsys,
    )
    assert code == 2 and "Traceback" not in err and str(db) in err and "not a usable" in err
    assert "mean_tokens" not in out  # stopped before evaluating, not after


def test_dollar_in_names_does_not_break_figures(tmp_path, capsys):
    from witune.analysis.synthetic import SyntheticSweep, make_sweep

    results, _ = make_sweep(
        SyntheticSweep(
            models=["m$^$"],
            datasets={"cost$_$": 0.1, "long": 4.0},
            benchmarks=["arc", "piqa"],
            prompt_weights=[0.0, 0.1, 1.0],
            response_weights=[0.5, 1.0],
            steps=5,
        )
    )
    results.to_csv(tmp_path / "r.csv", index=False)
    code, _, err = run_cli(
        ["analyze", tmp_path / "r.csv", "--bootstrap", "0", "--plots", tmp_path / "png", "--json"], capsys
    )
    assert code == 0, err
    assert (tmp_path / "png" / "plw_fit.png").stat().st_size > 0
    code, _, err = run_cli(["report", tmp_path / "r.csv", "--bootstrap", "0", "-o", tmp_path / "r.html"], capsys)
    assert code == 0, err
    assert "cost$_$" in (tmp_path / "r.html").read_text()


def test_long_csv_field_is_read(tmp_path, tiny_model_dir, capsys):
    p = tmp_path / "long.csv"
    with p.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["instruction", "input", "output"])
        w.writerow(["x " * 80_000, "", "done"])  # 160,000 characters: over csv's default field limit
    out = tmp_path / "rows.jsonl"
    code, _, err = run_cli(["inspect", p, "--model", tiny_model_dir, "--max-length", "64", "--json", out], capsys)
    assert code == 0, err
    assert len(json.loads(out.read_text())["input_ids"]) == 64


# --- silent wrong results -------------------------------------------------------------------------------


def test_silent_wrong_results_refused(tmp_path, good, tiny_model_dir, capsys):
    dup = tmp_path / "dup.jsonl"
    dup.write_text(json.dumps(RECORD) + "\n" + '{"instruction": "a", "output": "b", "output": "c"}\n')
    refused(["inspect", dup, "--model", tiny_model_dir], capsys, "dup.jsonl", "line 2", "'output'", "duplicate")
    dup_json = tmp_path / "dup.json"
    dup_json.write_text(
        '[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "a",\n'
        '   "input": "", "input": "x", "output": "b"}\n]\n'
    )
    refused(["inspect", dup_json, "--model", tiny_model_dir], capsys, "dup.json", "line 3", "'input'")

    cfg = _config(tmp_path, good, "prompt_weight: 0.1\nmax_steps: 2\nprompt_weight: 0.9\n")
    refused(["train", cfg, "--print-config"], capsys, str(cfg), "line 4", "duplicate key 'prompt_weight'")
    cfg = _config(tmp_path, good, "prompt_weight: 1.5\n")
    refused(["train", cfg, "--print-config"], capsys, str(cfg), "prompt_weight", "allow_weight_above_one")
    refused(
        ["inspect", good, "--model", tiny_model_dir, "--prompt-weight", "5"],
        capsys,
        "--prompt-weight",
        "--allow-weight-above-one",
    )
    refused(["score", good, "--model", tiny_model_dir, "--plw", "3"], capsys, "--plw")

    for text, needle in [
        ("plw: [.nan]\n", "'plw'"),
        ("plw: [.inf]\n", "'plw'"),
        ("seeds: [1.5, 1.7]\n", "'seeds'"),
        ("eval_batch_size: 0\n", "'eval_batch_size'"),
        ("plw: [0.1, 3]\n", "'plw'"),
        ("plw: [0.1]\nplw: [0.2]\n", "duplicate key 'plw'"),
    ]:
        refused(["sweep", _sweep(tmp_path, good, text), "--dry-run"], capsys, "sweep.yaml", needle)

    refused(["clean", good, "-o", tmp_path / "clean.jsonl", "--max-chars", "-1"], capsys, "--max-chars")
    assert not (tmp_path / "clean.jsonl").exists()


def test_weights_above_one_need_the_flag_and_warn(tmp_path, good, tiny_model_dir, capsys):
    out = tmp_path / "rows.jsonl"
    code, _, err = run_cli(
        ["inspect", good, "--model", tiny_model_dir, "--plw", "3", "--allow-weight-above-one", "--json", out], capsys
    )
    assert code == 0 and "warning" in err and "--plw is 3" in err
    assert 3.0 in json.loads(out.read_text())["weights"]
    cfg = _config(tmp_path, good, "prompt_weight: 1.5\nallow_weight_above_one: true\n")
    code, out_text, err = run_cli(["train", cfg, "--print-config"], capsys)
    assert code == 0 and "prompt_weight: 1.5" in out_text and "warning" in err


def test_analyze_refuses_duplicates_empty_and_bad_features(tmp_path, capsys):
    import pandas as pd

    from witune.analysis.synthetic import SyntheticSweep, make_sweep

    results, _ = make_sweep(
        SyntheticSweep(
            models=["m"],
            datasets={"d": 0.1},
            benchmarks=["arc"],
            prompt_weights=[0.0, 0.1, 1.0],
            response_weights=[1.0],
            steps=3,
        )
    )
    doubled = pd.concat([results, results.iloc[[1]]], ignore_index=True)
    doubled.to_csv(tmp_path / "dup.csv", index=False)
    # line 3 is row 1 (after the header); its copy is the last line
    refused(
        ["analyze", tmp_path / "dup.csv", "--bootstrap", "0"],
        capsys,
        "dup.csv",
        f"line {len(doubled) + 1}",
        "already given on line 3",
    )
    results.iloc[:0].to_csv(tmp_path / "header.csv", index=False)
    refused(["analyze", tmp_path / "header.csv", "--bootstrap", "0"], capsys, "header.csv", "no data rows")
    results.to_csv(tmp_path / "ok.csv", index=False)
    refused(["analyze", tmp_path / "ok.csv", "--bootstrap", "-1"], capsys, "--bootstrap")
    pd.DataFrame({"level": ["dataset"], "name": ["d"], "val": [1.0]}).to_csv(tmp_path / "f.csv", index=False)
    refused(
        ["analyze", tmp_path / "ok.csv", "--bootstrap", "0", "--features", tmp_path / "f.csv"],
        capsys,
        "f.csv",
        "missing column(s) ['feature', 'value']",
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_utf8_bom_is_accepted(tmp_path, tiny_model_dir, capsys, suffix):
    if suffix == ".csv":
        text = "instruction,input,output\n" + ",".join(RECORD.values()) + "\n"
    else:
        text = json.dumps(RECORD if suffix == ".jsonl" else [RECORD]) + "\n"
    plain, bom = tmp_path / f"plain{suffix}", tmp_path / f"bom{suffix}"
    plain.write_text(text, encoding="utf-8")
    bom.write_text(text, encoding="utf-8-sig")
    assert bom.read_bytes().startswith(b"\xef\xbb\xbf")
    rows = []
    for p in (plain, bom):
        out = tmp_path / f"{p.stem}.out.jsonl"
        code, _, err = run_cli(["inspect", p, "--model", tiny_model_dir, "--json", out], capsys)
        assert code == 0, err
        rows.append(json.loads(out.read_text())["input_ids"])
    assert rows[0] == rows[1]


# --- bounded work on overlong records -------------------------------------------------------------------


def _whole(examples, tokenizer, weights):
    """The untruncated path: every sample tokenized whole (truncated afterwards by the caller)."""
    from witune.data import render_segments
    from witune.data.render import tokenize_segments

    return [tokenize_segments([render_segments(ex, tokenizer)], [ex], tokenizer, weights)[0] for ex in examples]


def test_overlong_records_tokenize_only_what_is_kept_with_identical_ids(shared_data, smollm2_dir, tiny_tokenizer):
    from witune.data import (
        Example,
        Message,
        RoleWeights,
        load_examples,
        overlong,
        render_segments,
        tokenize_examples,
        truncate,
    )
    from witune.models import load_tokenizer

    records = load_examples(shared_data / "train" / "lima_alpaca_format.json").examples
    longest = sorted(records, key=lambda e: -sum(len(m.content) for m in e.messages))[:3]
    # A longer real record too: real LIMA text as a prompt of ~100k characters and a response half that long.
    text = "\n\n".join(m.content for e in longest for m in e.messages)
    big = Example((Message("user", text * 2), Message("assistant", text)), "messages", longest[0].location)
    examples = [*longest, big]
    weights = RoleWeights(0.1, 1.0)
    for tokenizer in (load_tokenizer(smollm2_dir), tiny_tokenizer):
        whole = _whole(examples, tokenizer, weights)
        for max_length in (16, 256):
            chars = overlong.budget(tokenizer, max_length)
            assert chars is not None
            assert overlong.cut_segments(render_segments(big, tokenizer), chars, "left")[1] == ["prompt", "response"]
            for policy in ("left", "right", "drop"):
                got = tokenize_examples(
                    examples, tokenizer, weights, max_length=max_length, truncation=policy, on_error="skip"
                ).rows
                want = [r for r in (truncate(w, max_length, policy) for w in whole) if r and r.trainable_tokens]
                assert [(r.input_ids, r.weights, r.roles, r.response) for r in got] == [
                    (r.input_ids, r.weights, r.roles, r.response) for r in want
                ], (max_length, policy)


def _alias_bomb(key: str, levels: int = 9) -> str:
    """`key:` holding a "billion laughs": `levels` nested anchors of nine references each (9**levels strings)."""
    names = "abcdefghijk"[:levels]
    rows = [f"  - &{names[0]} [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    rows += [f"  - &{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip(names, names[1:])]
    return f"{key}:\n" + "\n".join(rows) + "\n"


@pytest.mark.parametrize(
    "command, key",
    [
        ("sweep", "eval_tasks"),
        ("sweep", "plw"),
        ("train", "role_weights"),
        ("train", "report_to"),
        ("dpo", "report_to"),
    ],
)
def test_yaml_alias_bombs_are_refused_at_once_in_one_line(tmp_path, good, capsys, command, key):
    import time

    head = {"sweep": f"set: {{data: {good}}}\n", "train": f"data: {good}\n", "dpo": f"model: m\ndata: {good}\n"}
    path = tmp_path / "bomb.yaml"
    path.write_text(head[command] + _alias_bomb(key))
    assert 350 < path.stat().st_size < 600  # the file: about 531 bytes standing for 9**9 strings
    argv = [command, path, "--dry-run"] if command == "sweep" else [command, path, "--print-config"]
    start = time.perf_counter()
    err = refused(argv, capsys, str(path), "line", "aliases")
    assert time.perf_counter() - start < 5
    assert len(err.strip().splitlines()) == 1 and "lol" not in err  # the expanded value is never formatted


def test_small_yaml_aliases_still_work(tmp_path):
    from witune.yaml_io import load_yaml_text

    assert load_yaml_text("a: &w [0.1, 0.2]\nb: *w\n", "ok.yaml") == {"a": [0.1, 0.2], "b": [0.1, 0.2]}
    with pytest.raises(Exception, match="refers to itself"):
        load_yaml_text("a: &x [1, *x]\n", "self.yaml")
