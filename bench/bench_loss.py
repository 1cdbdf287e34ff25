"""Benchmark 1: time and peak memory of the weighted loss against plain masked cross-entropy (CPU).

One command:  .venv/bin/python bench/bench_loss.py            (options: --tokens 2048 4096 8192 --repeats 3)

Every measurement runs in a fresh subprocess (one case, one size, one forward + backward), so the peak
resident memory it reports belongs to that case alone; repeats interleave the cases (A B C A B C ...) so that
load from other processes on a shared machine falls on all of them alike. Reported: median seconds, median
peak extra memory (peak RSS during the step minus RSS with the inputs built), and ratios to the baseline.

Two groups, vocabulary 128,256, weights lambda_p=0.1 on the first half of the tokens (prompt), 1 on the rest:
  logits -> loss   baseline F.cross_entropy on response-masked labels, vs the simplest weighted loss
                   (reduction="none" * w).sum() and witune's weighted_nll (chunked autograd function).
  hidden -> loss   the lm_head is part of the step (hidden 576 = SmolLM2-135M): F.linear + masked CE, vs
                   F.linear + weighted_nll, vs weighted_nll_from_hidden (never materialises the logits).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

VOCAB = 128_256
HIDDEN = 576
CASES = {
    "logits": ["masked_ce", "weighted_simple", "witune_weighted_nll"],
    "hidden": ["linear_masked_ce", "linear_witune_weighted_nll", "witune_from_hidden"],
}
BASELINE = {"logits": "masked_ce", "hidden": "linear_masked_ce"}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def run_case(case: str, tokens: int, lambda_p: float) -> dict:
    """One forward + backward of `case` in this process; returns seconds and peak extra bytes."""
    import torch
    import torch.nn.functional as F

    from witune.loss import weighted_nll, weighted_nll_from_hidden

    torch.manual_seed(0)
    labels = torch.randint(0, VOCAB, (tokens,))
    response = torch.arange(tokens) >= tokens // 2
    w = torch.where(response, 1.0, lambda_p)
    masked = torch.where(response, labels, -100)
    if case in CASES["logits"]:
        x = torch.empty(tokens, VOCAB).normal_().requires_grad_(True)  # in place: no temporary at build time
        leaves = [x]
    else:
        h = torch.empty(tokens, HIDDEN).normal_().requires_grad_(True)
        W = torch.empty(VOCAB, HIDDEN).normal_(std=HIDDEN**-0.5).requires_grad_(True)
        leaves = [h, W]

    def step():
        if case == "masked_ce":
            return F.cross_entropy(x, masked, reduction="sum")
        if case == "weighted_simple":
            return (F.cross_entropy(x, labels, reduction="none") * w).sum()
        if case == "witune_weighted_nll":
            return weighted_nll(x, labels, w, response).weighted_sum
        if case == "linear_masked_ce":
            return F.cross_entropy(F.linear(h, W), masked, reduction="sum")
        if case == "linear_witune_weighted_nll":
            return weighted_nll(F.linear(h, W), labels, w, response).weighted_sum
        if case == "witune_from_hidden":
            return weighted_nll_from_hidden(h, W, labels, w, response).weighted_sum
        raise ValueError(case)

    before = _rss_bytes()
    max_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    step().backward()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert all(t.grad is not None for t in leaves)
    # ru_maxrss is a lifetime maximum: it measures this step only if the step went above the build-time peak.
    return {"seconds": seconds, "peak_extra_bytes": max(0, peak - before), "valid_peak": peak > max_before}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, nargs="+", default=[2048, 4096, 8192])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lambda-p", type=float, default=0.1)
    p.add_argument("--groups", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "loss.json"))
    p.add_argument("--one", nargs=2, metavar=("CASE", "TOKENS"), help=argparse.SUPPRESS)  # subprocess entry
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_case(args.one[0], int(args.one[1]), args.lambda_p)))
        return 0

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from witune.atomic import atomic_write_text
    plan = [(g, c, n) for n in args.tokens for g in args.groups for c in CASES[g]]
    raw: dict[str, list[dict]] = {}
    with Progress() as bar:
        task = bar.add_task("loss benchmark", total=len(plan) * args.repeats)
        for _ in range(args.repeats):
            for g, c, n in plan:
                out = subprocess.run([sys.executable, __file__, "--one", c, str(n), "--lambda-p", str(args.lambda_p)],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"case {c} at {n} tokens failed:\n{out.stderr[-2000:]}")
                raw.setdefault(f"{g}|{c}|{n}", []).append(json.loads(out.stdout.strip().splitlines()[-1]))
                atomic_write_text(args.out + ".partial", json.dumps(raw))  # a long run killed midway keeps its data
                bar.advance(task)

    rows = []
    for key, runs in raw.items():
        g, c, n = key.split("|")
        rows.append({"group": g, "case": c, "tokens": int(n), "repeats": len(runs),
                     "median_s": statistics.median(r["seconds"] for r in runs),
                     "median_peak_mib": statistics.median(r["peak_extra_bytes"] for r in runs) / 2**20,
                     "valid_peak": all(r["valid_peak"] for r in runs), "runs": runs})
    base = {(r["group"], r["tokens"]): r for r in rows if r["case"] == BASELINE[r["group"]]}
    table = Table(title=f"weighted loss, vocab {VOCAB:,}, forward+backward, CPU, median of {args.repeats}")
    for col in ("group", "case", "tokens", "time s", "time / baseline", "peak MiB", "peak / baseline"):
        table.add_column(col, justify="right" if col not in ("group", "case") else "left", no_wrap=True)
    for r in rows:
        b = base[(r["group"], r["tokens"])]
        r["time_ratio"] = r["median_s"] / b["median_s"]
        r["peak_ratio"] = r["median_peak_mib"] / b["median_peak_mib"] if b["median_peak_mib"] else float("nan")
        table.add_row(r["group"], r["case"], str(r["tokens"]), f"{r['median_s']:.3f}", f"{r['time_ratio']:.3f}",
                      f"{r['median_peak_mib']:.0f}" + ("" if r["valid_peak"] else "?"), f"{r['peak_ratio']:.3f}")
    Console().print(table)
    import torch

    meta = {"vocab": VOCAB, "hidden": HIDDEN, "lambda_p": args.lambda_p, "repeats": args.repeats,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.platform(),
            "cpu": platform.processor(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_text(args.out, json.dumps({"meta": meta, "rows": rows}, indent=1))
    Path(args.out + ".partial").unlink(missing_ok=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
