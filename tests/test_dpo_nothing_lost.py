"""Nothing lost on DPO's surfaces: `dpo-pairs -o` never replaces its input (nor, without --force, any file or
link), and `witune dpo` never writes into the run it starts from; a resume continues only its own run."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from witune.cli.main import main


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _sft_data(path: Path, n: int = 6) -> Path:
    path.write_text(
        "".join(
            json.dumps({"instruction": f"Question {i}: add one to {i}.", "input": "", "output": f"It is {i + 1}."})
            + "\n"
            for i in range(n)
        )
    )
    return path


def _one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]


# --- dpo-pairs -o ------------------------------------------------------------------------------------------


def test_dpo_pairs_never_writes_onto_its_input_nor_an_existing_file(tmp_path, capsys):
    data = _sft_data(tmp_path / "data.jsonl")
    before = data.read_bytes()
    missing_model = str(tmp_path / "no-model")  # a refusal that names -o proves -o was checked before the model
    os.link(data, tmp_path / "hard.jsonl")
    (tmp_path / "alias.jsonl").symlink_to(data)
    for out, force in ((data, False), (data, True), (tmp_path / "hard.jsonl", True), (tmp_path / "alias.jsonl", True)):
        args = ["dpo-pairs", str(data), "--model", missing_model, "-o", str(out)] + (["--force"] if force else [])
        assert main(args) == 2
        _one_error_line(capsys.readouterr().err, "is the input file", str(out))
    assert data.read_bytes() == before and (tmp_path / "alias.jsonl").is_symlink()

    other = tmp_path / "precious.jsonl"
    other.write_text("precious\n")
    (tmp_path / "link.jsonl").symlink_to(other)
    for out in (other, tmp_path / "link.jsonl"):
        assert main(["dpo-pairs", str(data), "--model", missing_model, "-o", str(out)]) == 2
        _one_error_line(capsys.readouterr().err, "exists already", "--force")
    assert other.read_text() == "precious\n" and (tmp_path / "link.jsonl").is_symlink()

    with pytest.raises(SystemExit):  # argparse: one usage line, before anything is loaded
        main(["dpo-pairs", str(data), "--model", missing_model, "-o", str(tmp_path / "new.jsonl"), "--limit", "0"])
    assert "--limit: must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "new.jsonl").exists()


def test_dpo_pairs_with_force_replaces_the_output(tmp_path, tiny_model_dir, capsys):
    data = _sft_data(tmp_path / "data.jsonl", 3)
    out = tmp_path / "pairs.jsonl"
    out.write_text("old\n")
    args = ["dpo-pairs", str(data), "--model", str(tiny_model_dir), "-o", str(out), "--max-new-tokens", "4"]
    assert main([*args, "--force"]) == 0
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert rows and {"prompt", "chosen", "rejected"} <= set(rows[0])
    assert sorted(os.listdir(tmp_path)) == ["data.jsonl", "pairs.jsonl"]  # no temporary left


# --- witune dpo: the start run is read-only, a resume continues only its own run ----------------------------


def _pairs(path: Path, swapped: bool = False) -> Path:
    rows = []
    for i in range(8):
        good, bad = f" It is {i + 1}.", f" I do not know what {i} is."
        chosen, rejected = (bad, good) if swapped else (good, bad)
        rows.append(json.dumps({"prompt": f"Question {i}: add one to {i}.", "chosen": chosen, "rejected": rejected}))
    path.write_text("\n".join(rows) + "\n")
    return path


def _dpo(model: Path | str, data: Path, out: Path | str, *extra: str, **sets: object) -> list[str]:
    values: dict[str, object] = dict(
        model=model,
        data=data,
        output_dir=out,
        max_steps=2,
        per_device_batch_size=2,
        learning_rate=1e-3,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        save_every=1,
        progress=False,
        seed=3,
    )
    values.update(sets)
    return ["dpo", *[a for k, v in values.items() for a in ("--set", f"{k}={v}")], *extra]


@pytest.fixture
def sft_run(tmp_path, tiny_model_dir) -> Path:
    """A `witune train` run folder as it is left on disk (model/, checkpoints/, config.yaml, metrics.jsonl)."""
    import shutil

    run = tmp_path / "sft"
    shutil.copytree(tiny_model_dir, run / "model")
    (run / "checkpoints" / "step-2").mkdir(parents=True)
    (run / "checkpoints" / "step-2" / "trainer_state.json").write_text('{"step": 2}')
    (run / "config.yaml").write_text(f"model: {tiny_model_dir}\nprompt_weight: 0.1\n")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.5}\n')
    return run


def test_dpo_never_writes_into_the_run_it_starts_from(sft_run, tmp_path, capsys):
    pytest.importorskip("trl")
    data = _pairs(tmp_path / "pairs.jsonl")
    before = _tree(sft_run)
    (tmp_path / "alias").symlink_to(sft_run)
    cases = [
        (sft_run, sft_run, "is the start model"),  # a run folder as the model, the same folder as output
        (sft_run / "model", sft_run, "holds the start model"),
        (sft_run / "model", sft_run / "model", "is the start model"),
        (sft_run, sft_run / "dpo", "is inside the start model"),
        (sft_run, tmp_path / "alias", "is the start model"),  # through a link
    ]
    for model, out, why in cases:
        for flag in ("--resume", "--overwrite", None):
            assert main(_dpo(model, data, out, *([flag] if flag else []))) == 2
            _one_error_line(capsys.readouterr().err, why, "never writes into the run it starts from")
    assert _tree(sft_run) == before and not (sft_run / "dpo").exists()


def test_dpo_resume_refuses_other_settings_and_other_pairs(sft_run, tmp_path, capsys):
    pytest.importorskip("trl")
    data = _pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "dpo"  # beside the SFT run, as a sweep places it
    assert main(_dpo(sft_run / "model", data, out)) == 0
    capsys.readouterr()
    before = _tree(out)
    assert main(_dpo(sft_run / "model", data, out, "--resume", beta=0.5, learning_rate=2e-3)) == 2
    _one_error_line(capsys.readouterr().err, "cannot resume", "beta 0.1 -> 0.5", "learning_rate 0.001 -> 0.002")
    swapped = _pairs(tmp_path / "swapped.jsonl", swapped=True)
    assert main(_dpo(sft_run / "model", swapped, out, "--resume")) == 2
    _one_error_line(capsys.readouterr().err, "cannot resume", "data")
    data.write_text(swapped.read_text())  # the same file name, the opposite objective
    assert main(_dpo(sft_run / "model", data, out, "--resume")) == 2
    _one_error_line(capsys.readouterr().err, "cannot resume", "the training data itself")
    assert _tree(out) == before  # config.yaml still describes the run that is there
    _pairs(data)
    assert main(_dpo(sft_run / "model", data, out, "--resume", max_steps=3)) == 0  # a longer run is intended
    assert [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_dpo_resume_without_a_checkpoint_refuses_other_settings(sft_run, tmp_path, capsys):
    pytest.importorskip("trl")
    data = _pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "dpo"
    assert main(_dpo(sft_run / "model", data, out, save_every=0, max_steps=1)) == 0
    capsys.readouterr()
    before = _tree(out)
    assert main(_dpo(sft_run / "model", data, out, "--resume", save_every=0, max_steps=1, beta=0.3)) == 2
    _one_error_line(capsys.readouterr().err, "cannot resume", "beta 0.1 -> 0.3")
    assert main(_dpo(sft_run / "model", data, sft_run.parent / "other", "--resume", save_every=0)) == 0  # fresh
    assert _tree(out) == before
