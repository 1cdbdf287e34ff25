"""Successive halving against the full grid: the configuration each chooses and the training tokens each spends.

Both sweeps run the same points (same model, data, PLW values, seed and steps) in their own folders through
`witune sweep`. The grid trains every point to max_steps; halving (`search: halving`) trains rungs and
stops the worse configurations. The choice is the point with the lowest held-out response NLL per token (the
same scorer, `witune.sweep.halving.heldout_score`, on the same held-out records): for the grid over its final
models, for halving its final rung. When the two choices differ, the grid's final models of both are compared
item by item on the held-out records (paired difference of response NLL per token, and its standard error):
"within noise" means |difference| < 2 SE. Tokens: the logged tokens of every optimizer step that ran
(metrics.jsonl; log_every 1).

    python bench/bench_halving.py --model tiny --out bench/results/halving.json
    python bench/bench_halving.py --model /root/.cache/witune/smollm2-135m-instruct --lr 1e-4   # an idle machine

One repeat (`bench.method.interleaved`, load recorded): the tokens and the choices are deterministic; the
seconds are for orientation and are marked when the machine was loaded.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from method import interleaved, load_summary, write_results  # noqa: E402

from witune.sweep import db  # noqa: E402

SHARED = Path("/work/shared/data/train/alpaca_seed_tasks.jsonl")
PLWS = [0.0, 0.01, 0.03, 0.1, 0.3, 1.0]


def sweep_yaml(args, folder: Path, heldout: Path, search: str) -> Path:
    cfg = {
        "set": {
            "model": args.model,
            "data": str(SHARED),
            "limit": args.n_train,
            "max_length": args.max_length,
            "max_steps": args.max_steps,
            "per_device_batch_size": args.batch_size,
            "learning_rate": args.lr,
            "warmup_ratio": args.warmup_ratio,
            "lr_scheduler": "cosine",
            "deterministic": True,
        },
        "plw": PLWS,
        "seeds": [args.seed],
        "search": search,
        "halving_eta": args.eta,
        "halving_rungs": args.rungs,
        "halving_heldout": str(heldout),
        "eval_batch_size": 4,
        "weight_distance": False,
        "workers": 1,
        "output_dir": str(folder),
    }
    path = folder.parent / f"{folder.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_sweep_cli(config: Path) -> float:
    import subprocess

    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "witune.cli.sweep", str(config), "--no-progress"], text=True)
    if res.returncode != 0:
        raise SystemExit(f"sweep {config} failed ({res.returncode})")
    return time.perf_counter() - t0


def run_tokens(folder: Path, run_id: str) -> float:
    from witune.sweep.halving import trained_tokens

    return trained_tokens(folder / "runs" / run_id / "metrics.jsonl", 10**9)


def labels(folder: Path) -> dict[str, float]:
    return {r["run_id"]: r["point"]["labels"]["prompt_weight"] for r in db.runs(folder)}


def _grid_keys(text: str) -> dict:
    """A grid sweep's settings: its YAML less the halving keys, which a grid ignores."""
    return {k: v for k, v in yaml.safe_load(text).items() if not k.startswith("halving_")}


def grid_case(args, root: Path, heldout: Path) -> dict:
    from witune.sweep.halving import Heldout, heldout_score
    from witune.sweep.point import Point

    folder = root / "grid"
    config = root / "grid.yaml"
    before = config.read_text() if config.is_file() else None
    sweep_yaml(args, folder, heldout, "grid")
    done = (folder / "sweep.db").is_file() and all(r["status"] == "done" for r in db.runs(folder))
    seconds: float | None = None  # a reused grid was not timed in this run
    if not (args.reuse_grid and done and before is not None and _grid_keys(before) == _grid_keys(config.read_text())):
        shutil.rmtree(folder, ignore_errors=True)
        seconds = run_sweep_cli(config)
    h = Heldout(str(heldout), None, 4)
    scores = {}
    for r in db.runs(folder):
        point = Point.from_json(json.dumps(r["point"]))
        scores[r["run_id"]] = heldout_score(point, folder / "runs" / r["run_id"] / "model", h)
    plw = labels(folder)
    best = min(scores, key=lambda k: scores[k])
    return {
        "seconds": seconds,
        "tokens": sum(run_tokens(folder, rid) for rid in scores),
        "chosen_plw": plw[best],
        "scores": {str(plw[k]): v for k, v in scores.items()},
        "steps": args.max_steps * len(scores),
    }


def halving_case(args, root: Path, heldout: Path) -> dict:
    folder = root / "halving"
    shutil.rmtree(folder, ignore_errors=True)
    seconds = run_sweep_cli(sweep_yaml(args, folder, heldout, "halving"))
    rungs = db.rungs(folder)
    plw = labels(folder)
    final = [r for r in rungs if r["decision"] == "final"]
    best = min(final, key=lambda r: r["score"])
    last = {}
    for r in rungs:  # tokens are cumulative: each point's last rung holds all it trained
        last[r["run_id"]] = max(last.get(r["run_id"], 0.0), r["tokens"])
    return {
        "seconds": seconds,
        "tokens": sum(last.values()),
        "chosen_plw": plw[best["run_id"]],
        "rungs": [
            {
                "plw": plw[r["run_id"]],
                "rung": r["rung"],
                "steps": r["steps"],
                "score": r["score"],
                "decision": r["decision"],
            }
            for r in rungs
        ],
        "steps": sum(max(r["steps"] for r in rungs if r["run_id"] == rid) for rid in last),
    }


def paired(root: Path, heldout: Path, plw_a: float, plw_b: float, max_length: int) -> dict:
    """Grid final models of two PLW values, item by item on the held-out records: mean difference b - a, SE."""
    from witune.data import RoleWeights, load_examples
    from witune.data.pipeline import tokenize_examples
    from witune.eval.score import score_each
    from witune.models import load_model, load_tokenizer
    from witune.train import setup

    folder = root / "grid"
    ids = {v: k for k, v in labels(folder).items()}
    items = {}
    for p in (plw_a, plw_b):
        model_dir = folder / "runs" / ids[p] / "model"
        tok = load_tokenizer(str(model_dir))
        rows = tokenize_examples(
            load_examples(str(heldout)).examples, tok, RoleWeights(1.0, 1.0), max_length=max_length, on_error="skip"
        ).rows
        items[p] = score_each(load_model(str(model_dir)), rows, setup.pad_id(tok))[1]
    d = [b - a for a, b in zip(items[plw_a], items[plw_b], strict=True) if math.isfinite(a) and math.isfinite(b)]
    mean = sum(d) / len(d)
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d))
    return {"mean_diff": mean, "se": se, "within_noise": abs(mean) < 2 * se, "n": len(d)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="tiny (witune.models.tiny) or a model folder, e.g. SmolLM2-135M")
    ap.add_argument("--n-train", type=int, default=135)
    ap.add_argument("--max-steps", type=int, default=27)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--warmup-ratio", type=float, default=0.1, help="0.037: the same 3 warmup steps at 81 steps")
    ap.add_argument("--lr", type=float, default=None, help="default: 1e-3 for the tiny model, else 1e-4")
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--rungs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/bench_halving")
    ap.add_argument("--out", default="bench/results/halving.json")
    ap.add_argument(
        "--reuse-grid",
        action="store_true",
        help="keep a finished grid in --work from an earlier run with the same settings (its tokens and "
        "choice are deterministic; its seconds are not measured again): to try other halving settings",
    )
    args = ap.parse_args()
    root = Path(args.work)
    root.mkdir(parents=True, exist_ok=True)
    if args.lr is None:
        args.lr = 1e-3 if args.model == "tiny" else 1e-4
    if args.model == "tiny":  # the random tiny Llama (witune.models.tiny), for a loaded machine
        from witune.models import make_tiny_model

        args.model = str(make_tiny_model(root / "tiny-model"))
    heldout = root / "heldout.jsonl"  # the records after the training ones
    heldout.write_text("\n".join(SHARED.read_text().splitlines()[args.n_train :]) + "\n")
    runs = interleaved(
        {"grid": lambda: grid_case(args, root, heldout), "halving": lambda: halving_case(args, root, heldout)}, 1
    )
    grid, halving = runs["grid"][0], runs["halving"][0]
    rows = [{"variant": k, **v[0], **load_summary(v)} for k, v in runs.items()]
    same = grid["chosen_plw"] == halving["chosen_plw"]
    verdict = {"same_choice": same, "token_ratio": halving["tokens"] / grid["tokens"]}
    if not same:
        verdict["paired"] = paired(root, heldout, grid["chosen_plw"], halving["chosen_plw"], args.max_length)
    print(json.dumps(verdict, indent=1))
    write_results(args.out, {"args": vars(args), "plws": PLWS, "verdict": verdict}, rows)


if __name__ == "__main__":
    main()
