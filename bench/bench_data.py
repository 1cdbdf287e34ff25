"""Benchmark 2: data-preparation samples/s of witune against TRL SFTTrainer's dataset preparation.

One command:  python bench/bench_data.py   (options: --file, --limit 1000 --repeats 3 --workers 2)

Same file, same examples (witune's loader turns Alpaca records into one user and one assistant message; TRL
gets exactly those messages as a conversational prompt/completion dataset), same SmolLM2 tokenizer and chat
template, no truncation. Timed from examples in memory to token rows with a loss mask:
  trl          SFTTrainer._prepare_dataset (the method SFTTrainer.__init__ runs; called without building a
               model) on Dataset.from_list, completion_only_loss=True, dataset_num_proc=1
  witune       tokenize_examples, single process (batched tokenizer calls)
  witune_mp    prepare_examples with --workers processes
  witune_cache prepare_examples reading its content-hash cache (a warm second run: sweeps re-prepare the data)
Repeats interleave the variants (bench/method.py: load average around each run, min / median / max); ratios
to TRL are of medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parent))
from method import (
    fmt_spread,
    interleaved,
    load_cell,
    load_summary,
    spread,
    write_results,
)

DEFAULT_FILE = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "gsm8k_train_alpaca.json")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", default=DEFAULT_FILE)
    p.add_argument("--limit", type=int, default=1000, help="first N examples of the file")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "data.json"))
    args = p.parse_args()
    if not Path(args.file).exists():
        raise SystemExit(f"data file not found: {args.file}")

    import datasets
    from rich.console import Console
    from rich.table import Table
    from trl import SFTConfig, SFTTrainer

    from witune.data import RoleWeights, load_examples, tokenize_examples
    from witune.data.cache import prepare_examples
    from witune.models import load_tokenizer, smollm2_path

    datasets.disable_progress_bars()
    tok = load_tokenizer(str(smollm2_path()))
    examples = load_examples(args.file).examples[: args.limit]
    weights = RoleWeights(prompt=0.0, response=1.0)
    records = [
        {
            "prompt": [{"role": m.role, "content": m.content} for m in ex.messages[:-1]],
            "completion": [{"role": "assistant", "content": ex.messages[-1].content}],
        }
        for ex in examples
    ]
    with tempfile.TemporaryDirectory() as out_dir:
        cfg = SFTConfig(
            output_dir=out_dir, completion_only_loss=True, dataset_num_proc=None, report_to=[], use_cpu=True, bf16=False
        )
    # The attributes _prepare_dataset reads from the trainer: no model needs to be built to time it.
    shim = SimpleNamespace(_tokenizer=tok, chat_template=None, completion_only_loss=True)
    cache_dir = tempfile.mkdtemp(prefix="witune-bench-cache-")

    def trl():
        ds = datasets.Dataset.from_list(records)
        return len(SFTTrainer._prepare_dataset(shim, ds, tok, cfg, False, None, "train"))

    def witune():
        return len(tokenize_examples(examples, tok, weights, template="chat").rows)

    def witune_mp():
        return len(prepare_examples(examples, tok, weights, template="chat", workers=args.workers).rows)

    def witune_cache():
        return len(prepare_examples(examples, tok, weights, template="chat", cache_dir=cache_dir).rows)

    witune_cache()  # fill the cache once (untimed): the timed calls are warm reads
    variants = {"trl": trl, "witune": witune, f"witune_mp{args.workers}": witune_mp, "witune_cache": witune_cache}
    counts: dict[str, int] = {}

    def timed(name: str, fn):
        def run() -> dict:
            t0 = time.perf_counter()
            counts[name] = fn()
            return {"seconds": time.perf_counter() - t0}

        return run

    runs = interleaved({name: timed(name, fn) for name, fn in variants.items()}, args.repeats)
    rows = []
    base = statistics.median(r["seconds"] for r in runs["trl"])
    for name, rs in runs.items():
        sec = spread([r["seconds"] for r in rs])
        rows.append(
            {
                "variant": name,
                "seconds": sec,
                "samples_per_s": len(examples) / sec["median"],
                "speedup_vs_trl": base / sec["median"],
                "rows": counts[name],
                **load_summary(rs),
                "runs": rs,
            }
        )
    table = Table(
        title=f"data preparation, {Path(args.file).name} first {len(examples)}, SmolLM2 tokenizer, "
        f"{args.repeats} interleaved repeats"
    )
    for col in ("variant", "seconds min/med/max", "samples/s", "x TRL", "rows", "load 1-min"):
        table.add_column(col, justify="left" if col == "variant" else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["variant"],
            fmt_spread(r["seconds"]),
            f"{r['samples_per_s']:.0f}",
            f"{r['speedup_vs_trl']:.2f}",
            str(r["rows"]),
            load_cell(r),
        )
    Console(width=200).print(table)
    import tokenizers
    import trl as trl_mod

    write_results(
        args.out,
        {
            "file": args.file,
            "examples": len(examples),
            "workers": args.workers,
            "repeats": args.repeats,
            "trl": trl_mod.__version__,
            "tokenizers": tokenizers.__version__,
        },
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
