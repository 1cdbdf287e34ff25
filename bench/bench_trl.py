"""Benchmark: tokens/s and peak memory of TRL SFTTrainer with witune's weighted loss against stock TRL.

One command:  .venv/bin/python bench/bench_trl.py   (options: --limit 16 --batch 4 --max-length 256 --steps 4 --repeats 2)

Same model (SmolLM2-135M-Instruct, offline conversion), same first --limit GSM8K records as TRL prompt/completion
data (Alpaca prompt), same SFTConfig (batch, max_length, fp32, AdamW, padding), same number of steps.
Variants, each in its own subprocess (so that peak RSS is its own), interleaved repeat by repeat:
  trl          stock SFTTrainer, completion_only_loss=True
  witune_0_1   WeightedSFTTrainer, prompt 0 / response 1 (the same loss as trl: same work)
  witune_01_1  WeightedSFTTrainer, prompt 0.1 / response 1 (WIT: prompt tokens also go through the LM head)
tokens/s = non-padding tokens / seconds inside one optimizer step (callback on_step_begin -> on_step_end,
tokens counted by the collator, matched to steps by order), median over steps after the first, then median over
repeats; the variant order is reversed every other repeat. Peak memory = the subprocess's ru_maxrss. The load average (os.getloadavg) is recorded before and after
every run: on a shared machine, compare only ratios from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from method import write_results

DEFAULT_FILE = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "gsm8k_train_alpaca.json")
VARIANTS = ("trl", "witune_0_1", "witune_01_1")


def run_one(variant: str, args) -> dict:
    import datasets
    import torch
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from witune.data import alpaca_prompt
    from witune.integrations.trl import WeightedSFTTrainer
    from witune.models import load_model, load_tokenizer, smollm2_path

    torch.manual_seed(0)
    path = str(smollm2_path())
    tok, model = load_tokenizer(path), load_model(path, dtype=torch.float32)
    records = json.loads(Path(args.file).read_text())[: args.limit]
    ds = datasets.Dataset.from_list(
        [{"prompt": alpaca_prompt(r["instruction"], r["input"]), "completion": r["output"]} for r in records]
    )
    step_seconds: list[float] = []
    batch_tokens: list[int] = []
    t0: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            t0.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            step_seconds.append(time.perf_counter() - t0.pop())

    with tempfile.TemporaryDirectory() as out:
        cfg = SFTConfig(
            output_dir=out,
            per_device_train_batch_size=args.batch,
            max_steps=args.steps,
            max_length=args.max_length,
            learning_rate=2e-5,
            report_to=[],
            use_cpu=True,
            bf16=False,
            save_strategy="no",
            logging_steps=1000,
            seed=42,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        common = dict(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Timer()])
        if variant == "trl":
            trainer = SFTTrainer(**common)
        else:
            trainer = WeightedSFTTrainer(**common, prompt_weight=0.0 if variant == "witune_0_1" else 0.1)
        collate = trainer.data_collator

        def counting(features):
            batch = collate(features)
            batch_tokens.append(int(batch["attention_mask"].sum()))
            return batch

        trainer.data_collator = counting
        trainer.train()
    per_step = [t / s for t, s in zip(batch_tokens, step_seconds)]
    return {
        "variant": variant,
        "steps": len(step_seconds),
        "tokens": sum(batch_tokens[: len(step_seconds)]),
        "step_tokens_per_s": per_step,
        "tokens_per_s": statistics.median(per_step[1:] or per_step),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", default=DEFAULT_FILE)
    p.add_argument("--limit", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "trl_weighted.json"))
    p.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # subprocess entry
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args)), flush=True)
        return 0
    runs = []
    for repeat in range(args.repeats):
        # interleaved, and the order reversed every other repeat (ABBA): a steadily rising or falling load then
        # does not always favour the variant that runs second
        for variant in args.variants if repeat % 2 == 0 else args.variants[::-1]:
            load_before = os.getloadavg()
            cmd = [
                sys.executable,
                __file__,
                "--one",
                variant,
                "--file",
                args.file,
                "--limit",
                str(args.limit),
                "--batch",
                str(args.batch),
                "--max-length",
                str(args.max_length),
                "--steps",
                str(args.steps),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-3000:])
                return 1
            row = json.loads(next(ln[7:] for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")))
            row.update(repeat=repeat, loadavg_before=load_before, loadavg_after=os.getloadavg())
            runs.append(row)
            print(
                f"{variant:12s} repeat {repeat}: {row['tokens_per_s']:.1f} tokens/s, peak RSS {row['peak_rss_mb']:.0f} MB, "
                f"load {load_before[0]:.1f} -> {row['loadavg_after'][0]:.1f}",
                flush=True,
            )
    rows = []
    base = (
        statistics.median(r["tokens_per_s"] for r in runs if r["variant"] == "trl") if "trl" in args.variants else None
    )
    base_mem = max((r["peak_rss_mb"] for r in runs if r["variant"] == "trl"), default=None)
    for variant in args.variants:
        mine = [r for r in runs if r["variant"] == variant]
        tps = statistics.median(r["tokens_per_s"] for r in mine)
        mem = max(r["peak_rss_mb"] for r in mine)
        rows.append(
            {
                "variant": variant,
                "tokens_per_s": tps,
                "x_trl": tps / base if base else None,
                "peak_rss_mb": mem,
                "rss_vs_trl_mb": mem - base_mem if base_mem else None,
                "runs": mine,
            }
        )
        print(f"{variant:12s} {tps:8.1f} tokens/s  x TRL {rows[-1]['x_trl']:.3f}  peak RSS {mem:.0f} MB")
    meta = {k: getattr(args, k) for k in ("file", "limit", "batch", "max_length", "steps", "repeats")}
    meta.update(
        model="SmolLM2-135M-Instruct",
        engine="TRL SFTTrainer (transformers Trainer), CPU, fp32",
        cpu_count=os.cpu_count(),
    )
    write_results(args.out, meta, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
