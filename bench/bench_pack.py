"""Benchmark 4: how close each packing gets to the no-padding ceiling: fill (exact) and speed (CPU).

Commands (defaults: alpaca_seed_tasks.jsonl, --limit 32 --batch 8 --pack-batch 2 --max-length 512 --repeats 3):
  python bench/bench_pack.py                                             # Alpaca seed tasks, first 32, timed
  python bench/bench_pack.py --data gsm8k --limit 32                     # GSM8K train, first 32, timed
  python bench/bench_pack.py --limit 0 --repeats 0                       # fill only (no timing), all rows

Same samples (the first --limit of the file, 0 = all; SmolLM2 chat template, cut to --max-length, shuffled
once with --seed), the same real tokens in every variant. Micro-batches as training draws them: rows in the
order of the seeded schedule's permutation (`witune.train.batches.Schedule`, TRL: its shuffled sampler),
--pack-batch rows per micro-batch:
  padded    micro-batches of --batch samples, right-padded to the longest (witune without `pack`)
  greedy    witune `pack: greedy`: samples packed in data order into rows of <= --max-length tokens, position
            ids restarting per sample (attention never crosses samples); a micro-batch pads to its longest row
  bfd       witune `pack: bfd` (= `pack: true`): best-fit-decreasing rows, otherwise as greedy
  trl_bfd   TRL's own: `trl.data_utils.pack_dataset(strategy="bfd")` (SFTConfig packing=True's default) and
            TRL's `DataCollatorForLanguageModeling(padding_free=True)` (what SFTTrainer uses with packing):
            the micro-batch's rows concatenated into one row, no padding at all
  ceiling   the same token stream cut into the fewest rows any packing into --max-length rows can have
            (ceil(tokens / max_length)), all of equal length: no padding, no sample boundaries
fill = real tokens / token slots of the micro-batches (exact; the ceiling's is 1; with one row per micro-batch
it is 1 for every packing: then only the number of rows differs, given as fewest / rows). tokens/s = real tokens /
seconds of SmolLM2-135M fp32 forward + backward of witune's weighted loss over all micro-batches (no
optimizer step: its cost does not depend on the layout). Goal: bfd >= 0.97 x ceiling. Repeats interleave the
variants in one process after one untimed warm-up batch; the load average is recorded around every run
(bench/method.py).
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

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"
FILES = {"alpaca": DATA / "alpaca_seed_tasks.jsonl", "gsm8k": DATA / "gsm8k_train_alpaca.json"}
GOAL = 0.97  # bfd as a fraction of the no-padding ceiling
VARIANTS = ("padded", "greedy", "bfd", "trl_bfd", "ceiling")


def _rows(path: str, limit: int, max_length: int, seed: int, tok) -> list:
    from witune.data import RoleWeights, load_examples, tokenize_examples

    examples = load_examples(path).examples
    examples = examples[:limit] if limit > 0 else examples
    rows = tokenize_examples(
        examples, tok, RoleWeights(0.0, 1.0), template="chat", max_length=max_length, truncation="left", on_error="skip"
    ).rows
    return random.Random(seed).sample(rows, len(rows))


def _schedule_order(n: int, seed: int) -> list[int]:
    from witune.train.batches import Schedule

    return Schedule(n, 1, 1, 1, seed).permutation(0)


def _trl_batches(rows: list, max_length: int, pack_batch: int, pad: int, seed: int) -> tuple[list[dict], int]:
    """TRL's packing and padding-free collator on the same token rows (labels shifted here as witune's are), and
    the number of packed rows (TRL packs each `datasets.map` batch of 1,000 samples on its own)."""
    import torch
    from datasets import Dataset
    from trl.data_utils import pack_dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from witune.loss import IGNORE_INDEX

    packed = pack_dataset(Dataset.from_dict({"input_ids": [r.input_ids for r in rows]}), max_length, "bfd")
    packed = [packed[i] for i in _schedule_order(len(packed), seed)]
    collate = DataCollatorForLanguageModeling(pad_token_id=pad, padding_free=True)
    out = []
    for i in range(0, len(packed), pack_batch):
        b = collate(packed[i : i + pack_batch])
        labels = torch.full_like(b["labels"], IGNORE_INDEX)
        labels[:, :-1] = b["labels"][:, 1:]  # TRL's labels are unshifted, -100 at every sample start
        out.append(
            {
                "input_ids": b["input_ids"],
                "position_ids": b["position_ids"],
                "labels": labels,
                "weights": (labels != IGNORE_INDEX).float(),
            }
        )
    return out, len(packed)


def _layouts(rows: list, args, pad: int) -> tuple[dict[str, list[dict]], dict[str, int]]:
    from witune.data.collate import pack, packed_collate, pad_collate
    from witune.data.render import Rendered

    layouts, units = {}, {}
    layouts["padded"] = [pad_collate(rows[i : i + args.batch], pad) for i in range(0, len(rows), args.batch)]
    units["padded"] = len(rows)
    for strategy in ("greedy", "bfd"):
        bins = pack(rows, args.max_length, strategy)
        bins = [bins[i] for i in _schedule_order(len(bins), args.seed)]
        units[strategy] = len(bins)
        layouts[strategy] = [
            packed_collate(bins[i : i + args.pack_batch], pad) for i in range(0, len(bins), args.pack_batch)
        ]
    layouts["trl_bfd"], units["trl_bfd"] = _trl_batches(rows, args.max_length, args.pack_batch, pad, args.seed)
    starts = sum(int((b["position_ids"] == 0).sum()) for b in layouts["trl_bfd"])
    assert starts == len(rows), "TRL's packing lost or split samples"
    stream = Rendered([], [], [], [], rows[0].location)
    for r in rows:
        stream.input_ids += r.input_ids
        stream.weights += r.weights
        stream.roles += r.roles
        stream.response += r.response
    k = -(-len(stream) // args.max_length)
    length = len(stream) // k  # k equal rows (a remainder < k tokens is dropped)
    fields = ("input_ids", "weights", "roles", "response")
    equal = [
        Rendered(*(getattr(stream, f)[i * length : (i + 1) * length] for f in fields), stream.location)
        for i in range(k)
    ]
    units["ceiling"] = k
    layouts["ceiling"] = [pad_collate(equal[i : i + args.pack_batch], pad) for i in range(0, k, args.pack_batch)]
    return layouts, units


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="alpaca", help=f"{' or '.join(FILES)} (in the shared data folder), or a file")
    p.add_argument("--limit", type=int, default=32, help="first N samples (0: all)")
    p.add_argument("--batch", type=int, default=8, help="samples per padded micro-batch")
    p.add_argument("--pack-batch", type=int, default=2, help="packed rows per micro-batch")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (0: fill only, no model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default bench/results/pack_<data>.json")
    args = p.parse_args()
    path = FILES.get(args.data, Path(args.data))
    if not path.exists():
        print(f"skipped: data file not found: {path} (the shared data folder's README lists it)")
        return 0
    name = args.data if args.data in FILES else path.stem
    out = args.out or str(Path(__file__).parent / "results" / f"pack_{name}{'_fill' if not args.repeats else ''}.json")

    import torch
    from rich.console import Console
    from rich.table import Table

    from witune.loss import IGNORE_INDEX, weighted_nll
    from witune.models import load_model, load_tokenizer, smollm2_path
    from witune.train.setup import pad_id

    model_path = str(smollm2_path())
    tok = load_tokenizer(model_path)
    pad = pad_id(tok)
    rows = _rows(str(path), args.limit, args.max_length, args.seed, tok)
    layouts, units = _layouts(rows, args, pad)
    real = {v: sum(len(r) for r in rows) for v in VARIANTS}
    real["ceiling"] = sum(int(b["input_ids"].numel()) for b in layouts["ceiling"])
    trained = {  # predicted tokens: every variant trains the same ones (the ceiling has no sample boundaries)
        v: sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in layouts[v]) for v in VARIANTS if v != "ceiling"
    }
    assert len(set(trained.values())) == 1, trained

    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    if args.repeats > 0:
        model = load_model(model_path, dtype=torch.float32)
        model.train()

        def step(batch) -> None:
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
            logits = model(**inputs, use_cache=False).logits
            weighted_nll(logits, batch["labels"], batch["weights"]).weighted_sum.backward()
            model.zero_grad(set_to_none=True)

        def variant(v: str):
            def run() -> dict:
                t0 = time.perf_counter()
                for batch in layouts[v]:
                    step(batch)
                seconds = time.perf_counter() - t0
                return {"seconds": seconds, "tokens_per_s": real[v] / seconds}

            return run

        step(layouts["padded"][0])  # warm-up: first-call costs (thread pools, allocator) fall on no timed run
        runs = interleaved({v: variant(v) for v in VARIANTS}, args.repeats)

    rows_out = []
    for v in VARIANTS:
        slots = sum(int(b["input_ids"].numel()) for b in layouts[v])
        row = {
            "variant": v,
            "rows": units[v],
            "fewest_rows_ratio": units["ceiling"] / units[v] if v != "padded" else None,
            "micro_batches": len(layouts[v]),
            "real_tokens": real[v],
            "slots": slots,
            "fill": real[v] / slots,
        }
        if runs[v]:
            row.update({"tokens_per_s": spread([r["tokens_per_s"] for r in runs[v]]), **load_summary(runs[v])})
            row["runs"] = runs[v]
        rows_out.append(row)
    if args.repeats > 0:
        med = {r["variant"]: r["tokens_per_s"]["median"] for r in rows_out}
        for r in rows_out:
            r["x_padded"] = med[r["variant"]] / med["padded"]
            r["of_ceiling"] = med[r["variant"]] / med["ceiling"]
    timed = f", SmolLM2-135M fp32 forward+backward, CPU, {args.repeats} interleaved repeats" if args.repeats else ""
    table = Table(
        title=f"packing: {path.name}, {len(rows)} samples, {real['padded']} tokens, max_length {args.max_length}{timed}"
    )
    cols = ["variant", "rows", "fewest / rows", "micro-batches", "fill"]
    if args.repeats:
        cols += ["tokens/s min/med/max", "x padded", "/ ceiling", "load 1-min"]
    for col in cols:
        table.add_column(col, justify="left" if col == "variant" else "right", no_wrap=True)
    for r in rows_out:
        fewest = "-" if r["fewest_rows_ratio"] is None else f"{r['fewest_rows_ratio']:.3f}"
        cells = [r["variant"], str(r["rows"]), fewest, str(r["micro_batches"]), f"{r['fill']:.3f}"]
        if args.repeats:
            cells += [fmt_spread(r["tokens_per_s"], 0), f"{r['x_padded']:.2f}", f"{r['of_ceiling']:.2f}", load_cell(r)]
        table.add_row(*cells)
    Console(width=200).print(table)
    bfd = next(r for r in rows_out if r["variant"] == "bfd")
    fill_met = bfd["fill"] >= GOAL
    print(f"goal bfd fill >= {GOAL} of the ceiling: {'met' if fill_met else 'not met'} ({bfd['fill']:.3f})")
    speed_met = None
    if args.repeats:
        speed_met = bfd["of_ceiling"] >= GOAL
        print(f"goal bfd tokens/s >= {GOAL} x ceiling: {'met' if speed_met else 'not met'} ({bfd['of_ceiling']:.2f})")
    write_results(
        out,
        {
            "file": str(path),
            "samples": len(rows),
            "batch": args.batch,
            "pack_batch": args.pack_batch,
            "max_length": args.max_length,
            "repeats": args.repeats,
            "seed": args.seed,
            "goal_of_ceiling": GOAL,
            "goal_fill_met": fill_met,
            "goal_speed_met": speed_met,
        },
        rows_out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
