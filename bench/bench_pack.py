"""Benchmark 4: what packing gains where padding is large, against the no-padding ceiling (CPU).

One command:  python bench/bench_pack.py      (defaults: alpaca_seed_tasks.jsonl, --limit 32 --batch 8
                                                --pack-batch 2 --max-length 512 --repeats 3)

What packing can gain is bounded by the padding it removes, so the padding fraction is reported next to the
speed-up. Same samples (the first --limit of the file, SmolLM2 chat template, cut to --max-length, shuffled
once with --seed), the same real tokens in every variant, SmolLM2-135M fp32, one forward + backward of
witune's weighted loss per micro-batch (no optimizer step: its cost does not depend on the batch layout):
  padded    micro-batches of --batch samples, right-padded to the longest (witune without `pack`)
  packed    samples packed in order into rows of <= --max-length tokens (witune's `pack: true`; position
            ids restart per sample, attention never crosses samples), --pack-batch rows per micro-batch
  ceiling   the same token stream cut into as many equal-length rows as `packed` has, no padding and
            no sample boundaries: a batch of equal-length samples with the same token count
tokens/s = real (non-padding) tokens / seconds of forward + backward over all micro-batches. Goal: packed
>= 0.95 x ceiling. Repeats interleave the variants (in one process, after one untimed warm-up batch);
the load average is recorded around every run (bench/method.py).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from method import (
    fmt_spread,
    interleaved,
    load_cell,
    load_summary,
    spread,
    write_results,
)

DEFAULT_FILE = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "alpaca_seed_tasks.jsonl")
GOAL = 0.95  # packed tokens/s as a fraction of the no-padding ceiling


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", default=DEFAULT_FILE)
    p.add_argument("--limit", type=int, default=32)
    p.add_argument("--batch", type=int, default=8, help="samples per padded micro-batch")
    p.add_argument("--pack-batch", type=int, default=2, help="packed rows per micro-batch")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "pack.json"))
    args = p.parse_args()
    if not Path(args.file).exists():
        raise SystemExit(f"data file not found: {args.file}")

    import torch
    from rich.console import Console
    from rich.table import Table

    from witune.data import RoleWeights, load_examples, tokenize_examples
    from witune.data.collate import pack, packed_collate, pad_collate
    from witune.data.render import Rendered
    from witune.loss import weighted_nll
    from witune.models import load_model, load_tokenizer, smollm2_path
    from witune.train.setup import pad_id

    path = str(smollm2_path())
    tok, model = load_tokenizer(path), load_model(path, dtype=torch.float32)
    model.train()
    pad = pad_id(tok)
    examples = load_examples(args.file).examples[: args.limit]
    rows = tokenize_examples(
        examples,
        tok,
        RoleWeights(0.0, 1.0),
        template="chat",
        max_length=args.max_length,
        truncation="left",
        on_error="skip",
    ).rows
    rows = random.Random(args.seed).sample(rows, len(rows))
    bins = pack(rows, args.max_length)
    stream = Rendered([], [], [], [], rows[0].location)
    for r in rows:
        stream.input_ids += r.input_ids
        stream.weights += r.weights
        stream.roles += r.roles
        stream.response += r.response
    length = len(stream) // len(bins)  # equal rows, as many as packed has (a remainder < len(bins) is dropped)
    equal = [
        Rendered(
            *(getattr(stream, f)[i * length : (i + 1) * length] for f in ("input_ids", "weights", "roles", "response")),
            stream.location,
        )
        for i in range(len(bins))
    ]
    layouts = {
        "padded": [pad_collate(rows[i : i + args.batch], pad) for i in range(0, len(rows), args.batch)],
        "packed": [packed_collate(bins[i : i + args.pack_batch], pad) for i in range(0, len(bins), args.pack_batch)],
        "ceiling": [pad_collate(equal[i : i + args.pack_batch], pad) for i in range(0, len(equal), args.pack_batch)],
    }
    real = {"padded": sum(len(r) for r in rows), "packed": sum(len(r) for r in rows), "ceiling": length * len(equal)}

    def step(batch) -> None:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
        logits = model(**inputs, use_cache=False).logits
        weighted_nll(logits, batch["labels"], batch["weights"]).weighted_sum.backward()
        model.zero_grad(set_to_none=True)

    def variant(name: str):
        def run() -> dict:
            t0 = time.perf_counter()
            for batch in layouts[name]:
                step(batch)
            seconds = time.perf_counter() - t0
            return {"seconds": seconds, "tokens_per_s": real[name] / seconds}

        return run

    step(layouts["padded"][0])  # warm-up: first-call costs (thread pools, allocator) fall on no timed run
    runs = interleaved({name: variant(name) for name in layouts}, args.repeats)

    rows_out = []
    for name, rs in runs.items():
        slots = sum(b["input_ids"].numel() for b in layouts[name])
        rows_out.append(
            {
                "variant": name,
                "micro_batches": len(layouts[name]),
                "real_tokens": real[name],
                "slots": slots,
                "padding_fraction": 1 - real[name] / slots,
                "tokens_per_s": spread([r["tokens_per_s"] for r in rs]),
                **load_summary(rs),
                "runs": rs,
            }
        )
    med = {r["variant"]: r["tokens_per_s"]["median"] for r in rows_out}
    table = Table(
        title=f"packing, SmolLM2-135M fp32 forward+backward, CPU, {Path(args.file).name} first "
        f"{len(rows)} samples, max_length {args.max_length}, {args.repeats} interleaved repeats"
    )
    for col in (
        "variant",
        "micro-batches",
        "real tokens",
        "padding",
        "tokens/s min/med/max",
        "x padded",
        "/ ceiling",
        "load 1-min",
    ):
        table.add_column(col, justify="left" if col == "variant" else "right", no_wrap=True)
    for r in rows_out:
        r["x_padded"] = med[r["variant"]] / med["padded"]
        r["of_ceiling"] = med[r["variant"]] / med["ceiling"]
        table.add_row(
            r["variant"],
            str(r["micro_batches"]),
            str(r["real_tokens"]),
            f"{r['padding_fraction']:.0%}",
            fmt_spread(r["tokens_per_s"], 0),
            f"{r['x_padded']:.2f}",
            f"{r['of_ceiling']:.2f}",
            load_cell(r),
        )
    Console(width=200).print(table)
    verdict = "met" if med["packed"] >= GOAL * med["ceiling"] else "not met"
    print(f"goal packed >= {GOAL} x ceiling: {verdict} ({med['packed'] / med['ceiling']:.2f})")
    write_results(
        args.out,
        {
            "file": args.file,
            "samples": len(rows),
            "batch": args.batch,
            "pack_batch": args.pack_batch,
            "max_length": args.max_length,
            "repeats": args.repeats,
            "seed": args.seed,
            "goal_of_ceiling": GOAL,
            "goal_met": verdict == "met",
        },
        rows_out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
