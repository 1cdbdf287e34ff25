"""Benchmark 1: time and peak memory of the weighted loss against plain masked cross-entropy and TRL's chunked
loss (CPU).

One command:  python bench/bench_loss.py      (defaults: --groups hidden --tokens 2048 --repeats 3)

Every measurement runs in a fresh subprocess (one case, one size, one forward + backward), so the peak
resident memory it reports belongs to that case alone; repeats interleave the cases (A B C A B C ...) and
record the load average around each run (bench/method.py). Reported: min / median / max seconds, median
peak extra memory (peak RSS during the step minus RSS with the inputs built), ratios of medians to the
baseline, and the load range (`*` = under load).

Vocabulary 128,256; weights lambda_p (default 0.1) on the first third of the tokens (prompt), 1 on the rest.
  logits -> loss   baseline F.cross_entropy on response-masked labels, vs the simplest weighted loss
                   (reduction="none" * w).sum() and witune's weighted_nll (chunked autograd function).
  hidden -> loss   the lm_head is part of the step (hidden 576 = SmolLM2-135M):
                   linear_masked_ce           F.linear + masked CE (baseline)
                   linear_witune_weighted_nll F.linear + weighted_nll
                   trl_chunked_nll            TRL's chunked log-prob kernel (the loss of SFTTrainer's default
                                              loss_type="nll"), log-probs only, masked sum: the same loss as
                                              the baseline, never materialising the logits
                   trl_chunked_sft            the same kernel with the extra outputs SFTTrainer asks for
                                              (entropy, is_top1 for its logged metrics): what SFTTrainer runs
                   witune_from_hidden         weighted_nll_from_hidden at lambda_p
                   witune_from_hidden_lp0     the same at lambda_p = 0: prompt rows are skipped (the same loss
                                              as the masked baselines)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
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

VOCAB = 128_256
HIDDEN = 576
CASES = {
    "logits": ["masked_ce", "weighted_simple", "witune_weighted_nll"],
    "hidden": [
        "linear_masked_ce",
        "linear_witune_weighted_nll",
        "trl_chunked_nll",
        "trl_chunked_sft",
        "witune_from_hidden",
        "witune_from_hidden_lp0",
    ],
}
BASELINE = {"logits": "masked_ce", "hidden": "linear_masked_ce"}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def run_case(case: str, tokens: int, lambda_p: float, prompt_frac: float) -> dict:
    """One forward + backward of `case` in this process; returns seconds and peak extra bytes."""
    import torch
    import torch.nn.functional as F

    from witune.loss import weighted_nll, weighted_nll_from_hidden

    trl_fn = None
    if case.startswith("trl_"):
        from trl.kernels import ChunkedLogProbFunction
        from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

        outputs = ("log_probs",) if case == "trl_chunked_nll" else ("log_probs", "entropy", "is_top1")
        trl_fn = (ChunkedLogProbFunction, _CHUNKED_LOGPROB_CHUNK_SIZE, outputs)
    torch.manual_seed(0)
    labels = torch.randint(0, VOCAB, (tokens,))
    response = torch.arange(tokens) >= int(tokens * prompt_frac)
    w = torch.where(response, 1.0, lambda_p)
    w0 = response.float()
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
        if trl_fn is not None:
            # As trl.trainer.utils does on a device without Triton: every position scored, ignored ones zeroed.
            fn, chunk, outputs = trl_fn
            logprobs = fn.apply(h, W, None, masked.clamp(min=0), 1.0, chunk, None, 1.0, outputs)[0]
            return -logprobs.masked_fill(~response, 0).sum()
        if case == "witune_from_hidden":
            return weighted_nll_from_hidden(h, W, labels, w, response).weighted_sum
        if case == "witune_from_hidden_lp0":
            return weighted_nll_from_hidden(h, W, labels, w0, response).weighted_sum
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
    p.add_argument("--tokens", type=int, nargs="+", default=[2048])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lambda-p", type=float, default=0.1)
    p.add_argument("--prompt-frac", type=float, default=1 / 3, help="leading fraction of tokens that are prompt")
    p.add_argument("--groups", nargs="+", default=["hidden"], choices=list(CASES))
    p.add_argument("--cases", nargs="+", help="only these cases (the group baselines are always run)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "loss.json"))
    p.add_argument("--one", nargs=2, metavar=("CASE", "TOKENS"), help=argparse.SUPPRESS)  # subprocess entry
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_case(args.one[0], int(args.one[1]), args.lambda_p, args.prompt_frac)))
        return 0

    from rich.console import Console
    from rich.table import Table

    plan = [
        (g, c, n)
        for n in args.tokens
        for g in args.groups
        for c in CASES[g]
        if not args.cases or c in args.cases or c == BASELINE[g]
    ]
    variants = {
        f"{g}|{c}|{n}": (
            lambda c=c, n=n: in_subprocess(
                [__file__, "--one", c, str(n), "--lambda-p", str(args.lambda_p), "--prompt-frac", str(args.prompt_frac)]
            )
        )
        for g, c, n in plan
    }
    raw = interleaved(variants, args.repeats)

    rows = []
    for key, runs in raw.items():
        g, c, n = key.split("|")
        rows.append(
            {
                "group": g,
                "case": c,
                "tokens": int(n),
                "repeats": len(runs),
                "seconds": spread([r["seconds"] for r in runs]),
                "median_peak_mib": statistics.median(r["peak_extra_bytes"] for r in runs) / 2**20,
                "valid_peak": all(r["valid_peak"] for r in runs),
                **load_summary(runs),
                "runs": runs,
            }
        )
    base = {(r["group"], r["tokens"]): r for r in rows if r["case"] == BASELINE[r["group"]]}
    table = Table(
        title=f"weighted loss, vocab {VOCAB:,}, forward+backward, CPU, {args.repeats} interleaved repeats "
        f"(lambda_p {args.lambda_p} on the first {args.prompt_frac:.2f})"
    )
    for col in ("case", "tokens", "time s min/med/max", "time / base", "peak MiB", "peak / base", "load 1-min"):
        table.add_column(col, justify="left" if col == "case" else "right", no_wrap=True)
    for r in rows:
        b = base[(r["group"], r["tokens"])]
        r["time_ratio"] = r["seconds"]["median"] / b["seconds"]["median"]
        r["peak_ratio"] = r["median_peak_mib"] / b["median_peak_mib"] if b["median_peak_mib"] else float("nan")
        table.add_row(
            r["case"],
            str(r["tokens"]),
            fmt_spread(r["seconds"]),
            f"{r['time_ratio']:.2f}",
            f"{r['median_peak_mib']:.0f}" + ("" if r["valid_peak"] else "?"),
            f"{r['peak_ratio']:.2f}",
            load_cell(r),
        )
    Console(width=200).print(table)
    write_results(
        args.out,
        {
            "vocab": VOCAB,
            "hidden": HIDDEN,
            "lambda_p": args.lambda_p,
            "prompt_frac": args.prompt_frac,
            "repeats": args.repeats,
        },
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
