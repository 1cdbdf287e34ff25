"""Benchmark 2: data-preparation samples/s of witune against TRL SFTTrainer's dataset preparation.

One command:  .venv/bin/python bench/bench_data.py   (options: --file, --limit 1000 --repeats 3 --workers 2)

Same file, same examples (witune's loader turns Alpaca records into one user and one assistant message; TRL
gets exactly those messages as a conversational prompt/completion dataset), same SmolLM2 tokenizer and chat
template, no truncation. Timed from examples in memory to token rows with a loss mask:
  trl          SFTTrainer._prepare_dataset (the method SFTTrainer.__init__ runs; called without building a
               model) on Dataset.from_list, completion_only_loss=True, dataset_num_proc=1
  witune       tokenize_examples, single process (batched tokenizer calls)
  witune_mp    prepare_examples with --workers processes
  witune_cache prepare_examples reading its content-hash cache (a warm second run: sweeps re-prepare the data)
Repeats interleave the variants; medians are reported, with ratios to TRL.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

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
    records = [{"prompt": [{"role": m.role, "content": m.content} for m in ex.messages[:-1]],
                "completion": [{"role": "assistant", "content": ex.messages[-1].content}]} for ex in examples]
    with tempfile.TemporaryDirectory() as out_dir:
        cfg = SFTConfig(output_dir=out_dir, completion_only_loss=True, dataset_num_proc=None, report_to=[],
                        use_cpu=True, bf16=False)
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
    times: dict[str, list[float]] = {k: [] for k in variants}
    counts = {}
    for r in range(args.repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            counts[name] = fn()
            times[name].append(time.perf_counter() - t0)
            print(f"repeat {r + 1}/{args.repeats} {name}: {times[name][-1]:.2f} s", flush=True)
    rows = []
    base = statistics.median(times["trl"])
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append({"variant": name, "median_s": med, "samples_per_s": len(examples) / med,
                     "speedup_vs_trl": base / med, "rows": counts[name], "runs": ts})
    table = Table(title=f"data preparation, {Path(args.file).name} first {len(examples)}, SmolLM2 tokenizer, "
                        f"median of {args.repeats}")
    for col in ("variant", "seconds", "samples/s", "x TRL", "rows"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in rows:
        table.add_row(r["variant"], f"{r['median_s']:.2f}", f"{r['samples_per_s']:.0f}", f"{r['speedup_vs_trl']:.2f}",
                      str(r["rows"]))
    Console().print(table)
    import tokenizers
    import trl as trl_mod

    from results_io import write_results

    write_results(args.out, {"file": args.file, "examples": len(examples), "workers": args.workers,
                             "repeats": args.repeats, "trl": trl_mod.__version__,
                             "tokenizers": tokenizers.__version__}, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
