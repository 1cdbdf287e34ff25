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
