"""Benchmark: the demo (README's first command) end to end, as it runs now against how it ran before #24.

One command:  .venv/bin/python bench/bench_demo.py   (options: --repeats 1, --out ...)

Each case runs `witune.workflows.demo.run_demo` in a fresh process (bench/method.py, interleaved) and reports
its phases: training (both settings), the PIQA benchmark (base and both trained models, 200 items), held-out
scoring, and the total. Cases:
- `before`: stock lm-eval `HFLM` for the benchmark, padded batches with the full-logits loss, AdamW's
  per-tensor loop: the demo as it was when the cost issue was filed;
- `now`: the demo's own settings (witune's `WituneLM`, `pack: padding_free`, `chunked_loss: true`, fused AdamW).
Both train on the same samples in the same steps with the same loss, so the headline must agree (it is
printed for both; the script fails when the two headlines, numbers to the digits they show, differ).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from method import fmt_spread, in_subprocess, interleaved, load_cell, load_summary, spread, write_results

CASES = ("before", "now")
PHASES = ("train", "benchmark", "score", "total")


def run_case(case: str) -> dict:
    """One demo in this process, timed by phase; `before` undoes the changes this benchmark measures."""
    import dataclasses

    import witune.eval.items as items
    import witune.eval.score as score
    import witune.train.engine as engine
    from witune.train import setup
    from witune.workflows import demo

    spent = {"benchmark": 0.0, "score": 0.0}

    def timed(module, name: str, phase: str) -> None:
        inner = getattr(module, name)

        def call(*a, **k):
            t = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                spent[phase] += time.perf_counter() - t

        setattr(module, name, call)

    timed(items, "harness_items", "benchmark")
    timed(score, "score_each", "score")
    if case == "before":
        os.environ["WITUNE_EVAL_LM"] = "hf"
        train, build = engine.train, setup.build_optimizer
        engine.train = lambda cfg, **k: train(dataclasses.replace(cfg, pack="none", chunked_loss=False), **k)
        setup.build_optimizer = lambda cfg, model, fused=False: build(cfg, model, fused=False)
    with tempfile.TemporaryDirectory(prefix="witune_demo_bench_") as out:
        result = demo.run_demo(out, progress=False)
    return {
        **spent,
        "train": sum(s.train_seconds for s in result.settings),
        "total": result.seconds,
        "steps": sum(s.steps for s in result.settings),
        "headline": result.headline,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "demo.json"))
    p.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # one case, in this process
    args = p.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case)))
        return 0
    runs = interleaved({c: (lambda c=c: in_subprocess([__file__, "--case", c])) for c in CASES}, args.repeats)
    heads = {c: runs[c][0]["headline"] for c in CASES}
    rows = []
    for c in CASES:
        rows.append(
            {
                "case": c,
                "steps": runs[c][0]["steps"],
                **{ph: spread([r[ph] for r in runs[c]]) for ph in PHASES},
                "runs": runs[c],
                **load_summary(runs[c]),
            }
        )
    total = {r["case"]: r["total"]["median"] for r in rows}
    print(
        "\n| case | steps | train s | PIQA benchmark s | held-out scoring s | total s (min / median / max) | x before | load |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['steps']} | {r['train']['median']:.0f} | {r['benchmark']['median']:.0f} | "
            f"{r['score']['median']:.0f} | {fmt_spread(r['total'], 0)} | {total[r['case']] / total['before']:.2f} | "
            f"{load_cell(r)} |"
        )
    for c in CASES:
        print(f"\n{c} headline:\n  " + "\n  ".join(heads[c]))
    write_results(args.out, {"repeats": args.repeats}, rows)
    if heads["before"] != heads["now"]:
        print("the headlines differ (see above)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
