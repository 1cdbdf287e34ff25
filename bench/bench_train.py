"""Benchmark 3: training tokens/s of `witune train` against stock TRL SFTTrainer, CPU.

One command per data set:
  python bench/bench_train.py                                   # LIMA (long, mixed): --limit 8 --batch 4
  python bench/bench_train.py --file ../shared/data/train/gsm8k_train_alpaca.json \
      --out bench/results/train_gsm8k.json                      # GSM8K (short, fairly uniform)

Same model (SmolLM2-135M-Instruct, offline conversion), same first --limit examples of the same file, same
chat template, batch size, max_length, one epoch, fp32, AdamW. Truncation differs (TRL cuts the end; witune
cuts the prompt's start and skips samples left untrainable), so tokens/s is compared, not wall time.
Each variant runs in its own subprocess; repeats interleave them. tokens/s = non-padding tokens / seconds
inside one optimizer step, median over the steps of a run (the first step, a warm-up, is left out when there
are more than two), then min / median / max over interleaved repeats, with the load average around each run
(bench/method.py). witune: `tokens_per_s` of metrics.jsonl; TRL: a callback timing on_step_begin ->
on_step_end, tokens counted from the attention mask in the collator.
Variants:
  trl            stock SFTTrainer with TRL's own defaults (loss_type "nll": its chunked log-prob loss;
                 completion-only loss, the default for prompt/completion data; padding, no packing); only
                 batch size, max_length, one epoch, fp32 on CPU, no saving/reporting are set
  witune         witune train, prompt_weight 0 (the same loss as TRL's), padding, logits loss
  witune_chunked witune train with chunked_loss: true (weighted_nll_from_hidden, TRL's rival)
Packing is measured by bench_pack.py, where padding is large.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from method import (
    fmt_spread,
    in_subprocess,
    interleaved,
    load_cell,
    load_summary,
    spread,
    write_results,
)

# LIMA: lengths from ~20 to 2k+ tokens, i.e. mixed
DEFAULT_FILE = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "lima_alpaca_format.json")
VARIANTS = ("trl", "witune", "witune_chunked")


def run_trl(args) -> dict:
    import datasets
    import torch
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from witune.data import load_examples
    from witune.models import load_model, load_tokenizer, smollm2_path

    path = str(smollm2_path())
    tok, model = load_tokenizer(path), load_model(path, dtype=torch.float32)
    examples = load_examples(args.file).examples[: args.limit]
    records = [
        {
            "prompt": [{"role": m.role, "content": m.content} for m in ex.messages[:-1]],
            "completion": [{"role": "assistant", "content": ex.messages[-1].content}],
        }
        for ex in examples
    ]
    stats = {"seconds": 0.0, "tokens": 0, "steps": 0, "step_tokens_per_s": []}
    batch_tokens: list[int] = []  # per collated batch, in order
    step_seconds: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            stats["t0"] = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_seconds.append(time.perf_counter() - stats.pop("t0"))

    with tempfile.TemporaryDirectory() as out:
        # TRL's defaults except what must match witune's run: no loss, padding or learning-rate settings.
        cfg = SFTConfig(
            output_dir=out,
            per_device_train_batch_size=args.batch,
            num_train_epochs=1,
            max_length=args.max_length,
            report_to=[],
            use_cpu=True,
            bf16=False,
            save_strategy="no",
            logging_steps=1000,
            seed=42,
        )
        trainer = SFTTrainer(
            model=model,
            args=cfg,
            train_dataset=datasets.Dataset.from_list(records),
            processing_class=tok,
            callbacks=[Timer()],
        )
        collate = trainer.data_collator

        def counting(features):
            batch = collate(features)
            batch_tokens.append(
                int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
            )
            return batch

        trainer.data_collator = counting
        trainer.train()
    # The loader collates one batch ahead of the step that uses it, so tokens are matched to steps by order
    # (batch i is step i: no gradient accumulation), not by what was counted when a step ended.
    stats.update(
        seconds=sum(step_seconds),
        tokens=sum(batch_tokens),
        steps=len(step_seconds),
        step_tokens_per_s=[t / s for t, s in zip(batch_tokens, step_seconds)],
    )
    return stats


def run_witune(args, chunked: bool) -> dict:
    with tempfile.TemporaryDirectory() as out:
        sets = {
            "model": "smollm2",
            "data": args.file,
            "limit": args.limit,
            "template": "chat",
            "max_length": args.max_length,
            "truncation": "left",
            "skip_bad": "true",
            "chunked_loss": str(chunked).lower(),
            "prompt_weight": 0,
            "response_weight": 1,
            "epochs": 1,
            "per_device_batch_size": args.batch,
            "learning_rate": 2e-5,
            "precision": "fp32",
            "output_dir": out,
            "progress": "false",
            "save_every": 0,
        }
        cmd = [sys.executable, "-m", "witune.cli.main", "train"]
        for k, v in sets.items():
            cmd += ["--set", f"{k}={v}"]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise SystemExit(f"witune train failed ({res.returncode}):\n{res.stderr[-3000:]}")
        steps = [json.loads(ln) for ln in (Path(out) / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    # metrics.jsonl has per-step tokens/s (tokens and seconds inside the optimizer step) and cumulative time
    return {
        "step_tokens_per_s": [s["tokens_per_s"] for s in steps],
        "steps": len(steps),
        "elapsed_s": steps[-1]["elapsed_s"] if steps else 0.0,
    }


def run_one(args) -> dict:
    stats = run_trl(args) if args.one == "trl" else run_witune(args, chunked=args.one == "witune_chunked")
    per_step = stats["step_tokens_per_s"]
    timed = per_step[1:] if len(per_step) > 2 else per_step  # the first step pays one-off warm-up costs
    return {"tokens_per_s": statistics.median(timed), "steps": stats["steps"], "step_tokens_per_s": per_step}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", default=DEFAULT_FILE)
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    p.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # subprocess entry
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return 0

    from rich.console import Console
    from rich.table import Table

    passthrough = [
        "--file",
        args.file,
        "--limit",
        str(args.limit),
        "--batch",
        str(args.batch),
        "--max-length",
        str(args.max_length),
    ]
    runs = interleaved(
        {v: (lambda v=v: in_subprocess([__file__, "--one", v, *passthrough])) for v in args.variants}, args.repeats
    )
    rows = [
        {
            "variant": v,
            "tokens_per_s": spread([x["tokens_per_s"] for x in rs]),
            "steps": rs[0]["steps"],
            **load_summary(rs),
            "runs": rs,
        }
        for v, rs in runs.items()
    ]
    base = next((r["tokens_per_s"]["median"] for r in rows if r["variant"] == "trl"), None)
    table = Table(
        title=f"training SmolLM2-135M, CPU fp32, {Path(args.file).name} first {args.limit}, batch "
        f"{args.batch}, max_length {args.max_length}, {args.repeats} interleaved repeats"
    )
    for col in ("variant", "steps", "tokens/s min/med/max", "x TRL", "load 1-min"):
        table.add_column(col, justify="left" if col == "variant" else "right", no_wrap=True)
    for r in rows:
        r["ratio_vs_trl"] = r["tokens_per_s"]["median"] / base if base else None
        table.add_row(
            r["variant"],
            str(r["steps"]),
            fmt_spread(r["tokens_per_s"], 0),
            f"{r['ratio_vs_trl']:.2f}" if base else "-",
            load_cell(r),
        )
    Console(width=200).print(table)
    import trl

    write_results(
        args.out,
        {**{k: getattr(args, k) for k in ("file", "limit", "batch", "max_length", "repeats")}, "trl": trl.__version__},
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
