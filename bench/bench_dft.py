"""Benchmark 7: the cost of a dynamic token weight (DFT) in the loss from hidden states (CPU).

One command:  python bench/bench_dft.py      (defaults: --tokens 2048 --repeats 3)

The same inputs as benchmark 1's hidden group (bench_loss.py): vocabulary 128,256, hidden 576 (SmolLM2-135M),
the lm_head part of the step, one forward + backward per fresh subprocess, cases interleaved, load recorded
(bench/method.py). Weights lambda_p on the first third of the tokens (prompt), 1 on the rest.
  witune_static       weighted_nll_from_hidden at lambda_p (baseline: the static weighted loss)
  witune_dft          the same with dynamic=DFT(): each row's weight times its detached probability
  witune_static_lp0   at lambda_p = 0 (prompt rows skipped)
  witune_dft_lp0      DFT at lambda_p = 0: the loss TRL's loss_type="dft" computes
  trl_dft             TRL's chunked log-prob kernel, log-probs only, then -lp * exp(lp).detach() over the
                      response (TRL's DFT line), all rows scored as TRL does on a device without Triton
  trl_dft_sft         the same kernel with the outputs SFTTrainer asks for (entropy, is_top1): what
                      SFTTrainer(loss_type="dft") runs
Ratios: witune_dft / witune_static (goal <= 1.10), witune_dft_lp0 / witune_static_lp0, and TRL's DFT paths
against witune_dft_lp0 (the same loss).
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
from bench_loss import HIDDEN, VOCAB, _rss_bytes
from method import fmt_spread, in_subprocess, interleaved, load_cell, load_summary, spread, write_results

CASES = ["witune_static", "witune_dft", "witune_static_lp0", "witune_dft_lp0", "trl_dft", "trl_dft_sft"]
# case -> the case its time is compared with
AGAINST = {
    "witune_static": "witune_static",
    "witune_dft": "witune_static",
    "witune_static_lp0": "witune_static_lp0",
    "witune_dft_lp0": "witune_static_lp0",
    "trl_dft": "witune_dft_lp0",
    "trl_dft_sft": "witune_dft_lp0",
}


def run_case(case: str, tokens: int, lambda_p: float, prompt_frac: float) -> dict:
    """One forward + backward of `case` in this process; returns seconds and peak extra bytes."""
    import torch

    from witune.loss import DFT, weighted_nll_from_hidden

    torch.manual_seed(0)
    labels = torch.randint(0, VOCAB, (tokens,))
    response = torch.arange(tokens) >= int(tokens * prompt_frac)
    w = torch.where(response, 1.0, lambda_p if not case.endswith("_lp0") else 0.0)
    h = torch.empty(tokens, HIDDEN).normal_().requires_grad_(True)
    W = torch.empty(VOCAB, HIDDEN).normal_(std=HIDDEN**-0.5).requires_grad_(True)

    def step():
        if case.startswith("witune_"):
            dynamic = DFT() if "_dft" in case else None
            return weighted_nll_from_hidden(h, W, labels, w, response, dynamic=dynamic).weighted_sum
        from trl.kernels import ChunkedLogProbFunction
        from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

        outputs = ("log_probs",) if case == "trl_dft" else ("log_probs", "entropy", "is_top1")
        lp = ChunkedLogProbFunction.apply(h, W, None, labels, 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0, outputs)[
            0
        ].masked_fill(~response, 0)
        return (-lp * lp.exp().detach()).sum()

    before = _rss_bytes()
    max_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    step().backward()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert h.grad is not None and W.grad is not None
    return {"seconds": seconds, "peak_extra_bytes": max(0, peak - before), "valid_peak": peak > max_before}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lambda-p", type=float, default=0.1)
    p.add_argument("--prompt-frac", type=float, default=1 / 3, help="leading fraction of tokens that are prompt")
    p.add_argument("--cases", nargs="+", choices=CASES, default=CASES)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "dft.json"))
    p.add_argument("--one", metavar="CASE", help=argparse.SUPPRESS)  # subprocess entry
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_case(args.one, args.tokens, args.lambda_p, args.prompt_frac)))
        return 0

    from rich.console import Console
    from rich.table import Table

    cases = [c for c in CASES if c in args.cases or c in {AGAINST[x] for x in args.cases}]
    common = ["--tokens", str(args.tokens), "--lambda-p", str(args.lambda_p), "--prompt-frac", str(args.prompt_frac)]
    raw = interleaved({c: (lambda c=c: in_subprocess([__file__, "--one", c, *common])) for c in cases}, args.repeats)
    rows = {
        c: {
            "case": c,
            "tokens": args.tokens,
            "repeats": len(runs),
            "seconds": spread([r["seconds"] for r in runs]),
            "median_peak_mib": statistics.median(r["peak_extra_bytes"] for r in runs) / 2**20,
            "valid_peak": all(r["valid_peak"] for r in runs),
            **load_summary(runs),
            "runs": runs,
        }
        for c, runs in raw.items()
    }
    table = Table(
        title=f"DFT in the loss from hidden states, vocab {VOCAB:,}, hidden {HIDDEN}, {args.tokens} tokens, CPU, "
        f"{args.repeats} interleaved repeats (lambda_p {args.lambda_p} on the first {args.prompt_frac:.2f})"
    )
    for col in ("case", "time s min/med/max", "against", "time ratio", "peak MiB", "load 1-min"):
        table.add_column(col, justify="left" if col in ("case", "against") else "right", no_wrap=True)
    for c, r in rows.items():
        base = rows[AGAINST[c]]
        r["against"] = AGAINST[c]
        r["time_ratio"] = r["seconds"]["median"] / base["seconds"]["median"]
        table.add_row(
            c,
            fmt_spread(r["seconds"]),
            AGAINST[c],
            f"{r['time_ratio']:.2f}",
            f"{r['median_peak_mib']:.0f}" + ("" if r["valid_peak"] else "?"),
            load_cell(r),
        )
    Console(width=200).print(table)
    meta = {"vocab": VOCAB, "hidden": HIDDEN, "lambda_p": args.lambda_p, "prompt_frac": args.prompt_frac}
    write_results(args.out, {**meta, "repeats": args.repeats, "tokens": args.tokens}, list(rows.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
