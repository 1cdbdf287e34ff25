"""`witune tune`'s strategies replayed from one grid's stored learning curves, and confirmed live.

1. `witune tune DATA --search grid --curve-every K` trains every PLW level of the grid (and the prior) and keeps
   each run's held-out response NLL per record every K steps.
2. `witune.workflows.replay` computes, from those curves alone, what the surface search and successive halving
   (tune's three rungs: the first a third of the run, past the warmup; eta 3; the rank guard) would have chosen and spent.
3. Each strategy named by --live is run for real (`witune tune --search S`, a fresh folder, the same settings):
   its choice and every run's held-out scores must equal the replay's (training is deterministic).

The choice of each strategy is compared with the grid's (the lowest held-out NLL at the last step): "the grid's
choice", or the paired difference of their final models over the held-out records ("within noise": < 2 SE).

    python bench/bench_tune_replay.py --model tiny --out bench/results/tune_replay_tiny.json
    python bench/bench_tune_replay.py --model /root/.cache/witune/smollm2-135m-instruct --lr 1e-4 \\
      --max-length 160 --out bench/results/tune_replay_smollm2.json      # ~1 h on 2 idle cores
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from method import load1, write_results  # noqa: E402

from witune.shared_data import find_shared_data  # noqa: E402
from witune.sweep.config import fraction_rungs  # noqa: E402
from witune.workflows import replay  # noqa: E402

PLWS = [0.0, 0.01, 0.03, 0.1, 0.3, 1.0]  # BENCHMARKS.md section 9's levels


def tune(args, work: Path, search: str, out: Path, *extra: str) -> float:
    """`witune tune` through its CLI, as a user runs it (resumed when the folder holds a tune)."""
    cmd = [sys.executable, "-m", "witune.cli.main", "tune", str(work / "data.jsonl"), "--model", args.model]
    cmd += ["--search", search, "--out", str(out), "--tune-config", str(work / "tune.yaml"), "--no-progress"]
    for key, value in train_keys(args).items():
        cmd += ["--set", f"{key}={value}"]
    cmd += [*extra, *(["--resume"] if (out / "tune.yaml").is_file() else [])]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, text=True)
    if res.returncode != 0:
        raise SystemExit(f"witune tune --search {search} failed ({res.returncode})")
    return time.perf_counter() - t0


def train_keys(args) -> dict:
    return {
        "max_steps": args.max_steps,
        "max_length": args.max_length,
        "per_device_batch_size": args.batch_size,
        "learning_rate": args.lr,
        "warmup_ratio": args.warmup_ratio,
        "lr_scheduler": "cosine",
        "deterministic": True,
        "pack": "padding_free",
        "chunked_loss": True,
    }


def live_check(curves: replay.Curves, folder: Path, replayed: replay.Replayed) -> dict:
    """The live tune's choice and scores against the replay's: equal choice, equal per-record scores."""
    answer = json.loads((folder / "tune.json").read_text())
    last = curves.steps[-1]
    same_scores = all(r["items"] == curves.items[r["plw"]][last] for r in answer["runs"])
    return {
        "live_plw": answer["search_plw"],  # the search's choice (tune.json's plw adds the noise rule vs PLW 0)
        "live_answer": answer["plw"],
        "live_tokens": answer["tokens"],
        "replay_plw": replayed.plw,
        "replay_tokens": replayed.tokens,
        "choice_equal": answer["search_plw"] == replayed.plw,
        "tokens_equal": math.isclose(answer["tokens"], replayed.tokens),
        "scores_equal": same_scores,
        "stop": answer["stop"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="tiny (the random test Llama), or a model folder")
    ap.add_argument("--n-train", type=int, default=135)
    ap.add_argument("--n-heldout", type=int, default=40)
    ap.add_argument("--max-steps", type=int, default=27)
    ap.add_argument("--curve-every", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=None, help="default: 1e-3 for the tiny model, else 1e-4")
    ap.add_argument("--live", nargs="*", default=["surface", "halving"], help="strategies to confirm live")
    ap.add_argument("--work", default="/tmp/bench_tune_replay")
    ap.add_argument("--out", default="bench/results/tune_replay.json")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.model == "tiny":
        from witune.models import make_tiny_model

        args.model = str(make_tiny_model(work / "tiny"))
        args.lr = args.lr or 1e-3
    args.lr = args.lr or 1e-4
    shared = find_shared_data()
    if shared is None:
        raise SystemExit("the shared data folder (../shared/data) is needed: alpaca_seed_tasks.jsonl")
    records = (shared / "train" / "alpaca_seed_tasks.jsonl").read_text().splitlines()[: args.n_train + args.n_heldout]
    (work / "data.jsonl").write_text("\n".join(records) + "\n")
    (work / "tune.yaml").write_text(yaml.safe_dump({"grid": PLWS, "heldout_records": args.n_heldout}))

    grid_extra = ["--curve-every", str(args.curve_every), "--budget", str(len(PLWS) + 1)]  # every level + the prior
    seconds = {"grid": tune(args, work, "grid", work / "grid", *grid_extra)}
    curves = replay.read_curves(work / "grid")
    grid_answer = json.loads((work / "grid" / "tune.json").read_text())
    prior = grid_answer["prior_plw"]
    warmup = math.ceil(args.warmup_ratio * args.max_steps)
    rungs = fraction_rungs(args.max_steps, 1 / 3, 3, warmup)
    budget = max(3, len(PLWS) // 3)
    rows = replay.compare_to_grid(
        curves, [replay.replay_surface(curves, prior, budget), replay.replay_halving(curves, rungs, 3)]
    )
    live: dict[str, dict] = {}
    meta = {
        "command": " ".join(sys.argv),
        "model": args.model,
        "engine": "witune train (fp32 autocast off, padding_free, chunked loss)",
        "levels": sorted(curves.items),
        "prior_plw": prior,
        "rg": grid_answer["rg"],
        "curve_steps": curves.steps,
        "halving_rungs": rungs,
        "surface_budget_runs": budget,
        "heldout_records": args.n_heldout,
        "final_scores": {str(p): sum(v[curves.steps[-1]]) / len(v[curves.steps[-1]]) for p, v in curves.items.items()},
    }

    def save() -> list[dict]:  # after the replay, and again after each live run: a stopped bench keeps its rows
        out_rows = [{**r.__dict__, **live.get(r.strategy, {}), "seconds": seconds.get(r.strategy)} for r in rows]
        write_results(args.out, {**meta, "load1_end": load1()}, out_rows)
        return out_rows

    out_rows = save()
    for r in rows[1:]:
        if r.strategy in args.live:
            folder = work / f"live_{r.strategy}"
            extra = ["--budget", str(len(curves.items))] if r.strategy == "halving" else []
            seconds[r.strategy] = tune(args, work, r.strategy, folder, *extra)
            live[r.strategy] = live_check(curves, folder, r)
            out_rows = save()
    print("| strategy | chosen PLW | against the grid | runs | tokens | share | live equal |")
    print("|---|---:|---|---:|---:|---:|---|")
    for r in out_rows:
        eq = "-" if "choice_equal" not in r else f"{r['choice_equal'] and r['scores_equal'] and r['tokens_equal']}"
        print(
            f"| {r['strategy']} | {r['plw']:.3g} | {r['against_grid'] or '-'} | {r['runs']:.2f} | {r['tokens']:,.0f} "
            f"| {r['share']:.2f} | {eq} |"
        )


if __name__ == "__main__":
    main()
