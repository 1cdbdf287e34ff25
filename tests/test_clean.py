"""`witune clean`: real shared records plus injected defects; every removal is found, located and explained."""

import argparse
import json
from collections import Counter

from shared import shared_file

from witune.stats import clean, is_placeholder


def shared_records(name: str, n: int | None = None) -> list:
    return json.loads(shared_file(name).read_text())[:n]


def test_clean_cli_finds_injected_defects(tmp_path):
    from witune.cli import clean as cli

    real = shared_records("gsm8k_train_alpaca.json", 40)
    defects = {  # 1-based JSONL line -> (record, expected reason)
        5: ({"instruction": "Say hi.", "input": "", "output": "  "}, "empty output"),
        9: ({"instruction": "Name a colour.", "input": "", "output": "N/A"}, "placeholder output"),
        12: ({"instruction": "Repeat.", "input": "", "output": "<noinput>"}, "placeholder output"),
        20: (real[2], "duplicate"),
        25: ({"instruction": "Write a lot.", "input": "", "output": "word " * 5000}, "overlong"),
        30: ({"input": "", "output": "no instruction"}, "invalid"),
        33: (["not", "an", "object"], "invalid"),
    }
    lines, line = [], 1
    pending = list(real)
    while pending or line in defects:
        lines.append(json.dumps(defects[line][0] if line in defects else pending.pop(0)))
        line += 1
    src = tmp_path / "mixed.jsonl"
    src.write_text("\n".join(lines) + "\n")

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    out = tmp_path / "clean.jsonl"
    args = parser.parse_args(["clean", str(src), "-o", str(out), "--max-chars", "10000"])
    assert args.func(args) == 0
    kept = [json.loads(x) for x in out.read_text().splitlines()]
    assert kept == real  # exactly the real records, in order, unchanged
    report = [json.loads(x) for x in (tmp_path / "clean.removed.jsonl").read_text().splitlines()]
    assert {r["index"]: r["reason"] for r in report} == {k: v for k, (_, v) in defects.items()}
    by_line = {r["index"]: r for r in report}
    assert by_line[9]["field"] == "output" and by_line[30]["field"] == "instruction"
    assert by_line[20]["detail"].endswith("line 3")  # the first copy of real[2] is on line 3
    assert all(r["location"] == f"{src}, line {r['index']}" for r in report)


def test_clean_real_file_matches_independent_checks():
    records = shared_records("gpteacher_toolformer_dedupe.json")
    path = shared_file("gpteacher_toolformer_dedupe.json")
    result = clean(path, max_chars=10**9)
    keys = Counter(json.dumps(r, sort_keys=True) for r in records)
    duplicates = sum(v - 1 for v in keys.values())
    empty = sum(not r["output"].strip() or not r["instruction"].strip() for r in records)
    placeholders = sum(is_placeholder(r["output"]) and bool(r["output"].strip()) for r in records)
    assert result.total == len(records)
    assert result.counts()["duplicate"] == duplicates
    assert result.counts()["placeholder output"] == placeholders
    assert result.counts()["empty output"] + result.counts()["invalid"] == empty
    assert len(result.kept) == len(records) - len(result.removed)
