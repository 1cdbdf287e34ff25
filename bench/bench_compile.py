"""Benchmark 6: does torch.compile (CPU inductor) pay off for a training step? Eager vs compiled, CPU.

  python bench/bench_compile.py                        # SmolLM2-135M, batch 4 x 256 tokens, 8 steps, 3 repeats
  python bench/bench_compile.py --model tiny --steps 6 --repeats 1 --out /tmp/compile.json   # smoke run

One training step = forward, witune's weighted loss (lambda_p 0.1), backward, SGD step; fp32. Each case runs in
a fresh process (so the compile is paid again, as a new `witune train` would pay it) and with inductor's
on-disk cache emptied (`TORCHINDUCTOR_CACHE_DIR` in a new temporary folder): the first step's time is the
compile cost a user meets. Reported: first step, median of the later steps, and the break-even step count
= compile overhead / time saved per step. A `compile: true` setting would be worth adding only if the saving
per step is real and the break-even is small against the length of a run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from method import fmt_spread, in_subprocess, interleaved, load_cell, load_summary, spread, write_results


def case(model_name: str, compiled: bool, steps: int, batch: int, length: int) -> dict:
    """One run in this process: per-step seconds of `steps` training steps."""
    import torch

    from witune.loss import weighted_nll
    from witune.models import load_model, make_tiny_model

    path = make_tiny_model(Path(tempfile.mkdtemp()) / "tiny") if model_name == "tiny" else model_name
    model = load_model(path, dtype=torch.float32)
    model.config.use_cache = False
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    labels = torch.randint(0, vocab, (batch, length), generator=g)
    weights = torch.where(torch.arange(length) < length // 3, 0.1, 1.0).expand(batch, length).clone()
    run_model = torch.compile(model) if compiled else model
    loss_fn = torch.compile(weighted_nll) if compiled else weighted_nll
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        sums = loss_fn(run_model(input_ids=ids, use_cache=False).logits, labels, weights)
        (sums.weighted_sum / sums.nonzero).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return {"first_s": times[0], "later_s": statistics.median(times[1:]), "steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="smollm2, tiny, or a model folder")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/results/compile.json")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = ap.parse_args()
    if args.case:
        print(json.dumps(case(args.model, args.case == "compiled", args.steps, args.batch, args.length)))
        return
    model = args.model
    if model == "smollm2":
        from witune.models import smollm2_path

        model = str(smollm2_path())

    def variant(name: str):
        def run() -> dict:
            import os

            os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")  # a cold compile
            argv = [__file__, "--case", name, "--model", model, "--steps", str(args.steps)]
            return in_subprocess(argv + ["--batch", str(args.batch), "--length", str(args.length)])

        return run

    runs = interleaved({"eager": variant("eager"), "compiled": variant("compiled")}, args.repeats)
    rows = []
    for name, rs in runs.items():
        rows.append(
            {
                "variant": name,
                "first_s": spread([r["first_s"] for r in rs]),
                "later_s": spread([r["later_s"] for r in rs]),
                "runs": rs,
                **load_summary(rs),
            }
        )
    eager, compiled = (statistics.median(r["later_s"] for r in runs[n]) for n in ("eager", "compiled"))
    first = {n: statistics.median(r["first_s"] for r in runs[n]) for n in runs}
    saving = eager - compiled
    overhead = first["compiled"] - first["eager"]
    breakeven = overhead / saving if saving > 0 else float("inf")
    meta = {"model": args.model, "batch": args.batch, "length": args.length, "steps": args.steps}
    meta.update(step_speedup=eager / compiled, compile_overhead_s=overhead, breakeven_steps=breakeven)
    write_results(args.out, meta, rows)
    print("| variant | first step s | later steps s (min / med / max) | load 1-min |\n|---|---:|---:|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['first_s']['median']:.2f} | {fmt_spread(r['later_s'], 3)} | {load_cell(r)} |")
    print(f"step speed-up {eager / compiled:.2f}x, compile overhead {overhead:.1f} s, break-even {breakeven:.0f} steps")


if __name__ == "__main__":
    main()
