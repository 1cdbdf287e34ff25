"""`witune demo`: fine-tune SmolLM2-135M offline at a conventional and a weighted setting, then score both.

Data: the first `n_train` records of a small real instruction file (`alpaca_seed_tasks.jsonl` in the shared
data folder, when present); otherwise a generated set of tasks with checkable answers (`witune.train.synthetic`).
Held-out: the next `n_eval` records, scored per role (prompt / response NLL per token) for the base model and
each trained model. Everything stays on CPU-friendly sizes: the whole demo is meant to finish in < 15 minutes
on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from witune.atomic import atomic_savefig, atomic_write_text
from witune.train.config import TrainConfig

SHARED_FILE = "train/alpaca_seed_tasks.jsonl"
# (name, lambda_p, lambda_r): conventional instruction tuning, and a WIT-style weighted setting.
SETTINGS = [("conventional", 0.0, 1.0), ("weighted", 0.1, 1.0)]


@dataclass
class SettingResult:
    name: str
    prompt_weight: float
    response_weight: float
    model_dir: str
    metrics_path: str
    steps: int
    final_train_loss: float
    heldout_prompt_nll: float
    heldout_response_nll: float
    train_seconds: float


@dataclass
class DemoResult:
    output_dir: str
    model: str
    data: str
    data_kind: str  # "real" or "synthetic"
    n_train: int
    n_eval: int
    base_prompt_nll: float
    base_response_nll: float
    settings: list[SettingResult] = field(default_factory=list)
    benchmarks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # run name -> harness rows
    seconds: float = 0.0
    plot: str | None = None
    report: str | None = None  # the HTML report (witune.report), written last


def find_shared_data() -> Path | None:
    """The shared data folder: $WITUNE_SHARED_DATA, ./../shared/data, or ../shared/data next to the repository."""
    candidates = [os.environ.get("WITUNE_SHARED_DATA"), Path.cwd() / ".." / "shared" / "data",
                  Path(__file__).resolve().parents[3] / ".." / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / SHARED_FILE).is_file():
            return Path(c).resolve()
    return None


def demo_data(output_dir: Path, n_needed: int, data: str | None = None) -> tuple[str, str]:
    """(path, kind): a given file, the shared real file, or a generated synthetic file in output_dir."""
    if data:
        return data, "given"
    shared = find_shared_data()
    if shared is not None:
        return str(shared / SHARED_FILE), "real"
    from witune.train.synthetic import write_jsonl

    return str(write_jsonl(output_dir / "data" / "synthetic.jsonl", n_needed, seed=0)), "synthetic"


def run_demo(output_dir: str | Path = "runs/demo", model: str = "smollm2", data: str | None = None, n_train: int = 64,
             n_eval: int = 12, max_length: int = 160, batch_size: int = 2, learning_rate: float = 1e-4,
             settings: list[tuple[str, float, float]] | None = None, progress: bool = True,
             benchmark: str | None = "witune_arc_challenge", benchmark_limit: int = 50) -> DemoResult:
    """Train every setting for one epoch over `n_train` records, score the held-out records and, where the
    shared evaluation files are present, run a benchmark (0-shot, `benchmark_limit` items) on every model."""
    from witune.data import RoleWeights, load_examples, tokenize_examples
    from witune.eval.score import score
    from witune.train import setup
    from witune.train.engine import train

    start = time.perf_counter()
    out = Path(output_dir)
    path, kind = demo_data(out, n_train + n_eval, data)
    examples = load_examples(path, limit=n_train + n_eval).examples
    if len(examples) <= n_train:
        from witune.data.errors import ConfigError

        raise ConfigError(f"{path}: {len(examples)} records; the demo needs more than n_train={n_train}")
    base_cfg = TrainConfig(model=model, data=path, limit=n_train, max_length=max_length, learning_rate=learning_rate,
                           epochs=1, per_device_batch_size=batch_size, warmup_ratio=0.1, seed=0, progress=progress)
    tokenizer = setup.load_tokenizer(base_cfg)
    # Scoring weights 1/1: the per-role NLLs do not depend on them, and every held-out token is scored.
    heldout = tokenize_examples(examples[n_train:], tokenizer, RoleWeights(1.0, 1.0), max_length=max_length,
                                on_error="skip").rows
    pad = setup.pad_id(tokenizer)
    base = score(setup.load_model(base_cfg), heldout, pad, progress=False)
    result = DemoResult(str(out), model, path, kind, n_train, len(heldout), base.prompt_nll_per_token,
                        base.response_nll_per_token)
    shared = find_shared_data()
    bench = benchmark if benchmark and shared is not None and (shared / "eval").is_dir() else None

    def run_benchmark(name: str, model_path: str) -> None:
        if bench:
            from witune.eval import evaluate
            from witune.models import resolve_model_path

            result.benchmarks[name] = evaluate(resolve_model_path(model_path), [bench], limit=benchmark_limit,
                                               num_fewshot=0, data_dir=str(shared / "eval"))

    run_benchmark("base", model)
    for name, wp, wr in settings or SETTINGS:
        cfg = TrainConfig(**{**asdict(base_cfg), "prompt_weight": wp, "response_weight": wr,
                             "output_dir": str(out / name)})
        t0 = time.perf_counter()
        run = train(cfg, overwrite=True)  # the demo's own sub-folders: a re-run replaces them
        seconds = time.perf_counter() - t0
        from transformers import AutoModelForCausalLM

        s = score(AutoModelForCausalLM.from_pretrained(run.model_dir), heldout, pad, progress=False)
        result.settings.append(SettingResult(name, wp, wr, str(run.model_dir), str(run.metrics_path), run.steps,
                                             run.final_loss, s.prompt_nll_per_token, s.response_nll_per_token, seconds))
        run_benchmark(name, str(run.model_dir))
    result.plot = str(plot_losses(result, out / "train_loss.png"))
    result.seconds = time.perf_counter() - start
    result.report = write_report(result)
    atomic_write_text(out / "demo_summary.json", json.dumps(asdict(result), indent=1))
    return result


def plot_losses(result: DemoResult, path: Path) -> Path:
    """Training loss and response NLL per step, one line per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from witune.train.metrics import read_metrics

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for s in result.settings:
        m = read_metrics(s.metrics_path)
        steps = [r["step"] for r in m]
        axes[0].plot(steps, [r["loss"] for r in m], label=f"{s.name} (λp={s.prompt_weight:g})")
        axes[1].plot(steps, [r["response_nll"] for r in m], label=s.name)
    axes[0].set(title="training loss (weighted, per step)", xlabel="step")
    axes[1].set(title="response NLL per token (train batches)", xlabel="step")
    axes[0].legend()
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return path


def write_report(result: DemoResult) -> str:
    """The demo's models as a small sweep (base, conventional, weighted) scored on held-out per-role NLL,
    analysed and rendered by `witune.report` exactly like any sweep: `output_dir/report.html`."""
    import pandas as pd

    from witune.analysis.summary import analyze
    from witune.report.html import write_html_report as write_html
    from witune.sweep.runner import weight_distance
    from witune.train.metrics import read_metrics

    rows: list[dict[str, Any]] = []
    losses: list[tuple[str, int, float]] = []

    def add(run_id: str, wp: float, wr: float, prompt_nll: float, response_nll: float, **extra: Any) -> None:
        for metric, value in (("prompt_nll", prompt_nll), ("response_nll", response_nll)):
            rows.append({"run_id": run_id, "model": result.model, "dataset": Path(result.data).name,
                         "prompt_weight": wp, "response_weight": wr, "normalization": "nonzero", "seed": 0,
                         "benchmark": "heldout", "metric": metric, "score": value, "higher_is_better": False,
                         **extra})

    def add_benchmark(run_id: str, wp: float, wr: float, **extra: Any) -> None:
        for r in result.benchmarks.get(run_id, []):
            rows.append({"run_id": run_id, "model": result.model, "dataset": Path(result.data).name,
                         "prompt_weight": wp, "response_weight": wr, "normalization": "nonzero", "seed": 0,
                         "benchmark": r["task"].removeprefix("witune_"), "metric": r["metric"], "score": r["value"],
                         "higher_is_better": bool(r.get("higher_is_better", True)), **extra})

    add("base", float("nan"), float("nan"), result.base_prompt_nll, result.base_response_nll)
    add_benchmark("base", float("nan"), float("nan"))
    for s in result.settings:
        distance = weight_distance(result.model, Path(s.model_dir))
        add(s.name, s.prompt_weight, s.response_weight, s.heldout_prompt_nll, s.heldout_response_nll,
            weight_distance=distance)
        add_benchmark(s.name, s.prompt_weight, s.response_weight, weight_distance=distance)
        losses += [(s.name, int(m["step"]), float(m["loss"])) for m in read_metrics(s.metrics_path)]
    analysis = analyze(pd.DataFrame(rows), pd.DataFrame(losses, columns=["run_id", "step", "loss"]))
    title = f"witune demo: conventional vs weighted tuning of {result.model}"
    return str(write_html(analysis, Path(result.output_dir) / "report.html", title=title))


def summary_rows(result: DemoResult) -> list[dict[str, Any]]:
    """One row per model (base + settings) for the CLI table (where each model went is printed below it)."""
    def bench(name: str) -> dict[str, Any]:
        acc = [r["value"] for r in result.benchmarks.get(name, []) if r["metric"] == "acc"]
        task = next(iter(result.benchmarks.get(name, [])), {}).get("task", "benchmark").removeprefix("witune_")
        return {f"{task} acc": acc[0]} if acc else {}

    rows = [{"model": "base (untrained)", "lambda_p": "-", "steps": 0, "train loss": float("nan"),
             "prompt NLL": result.base_prompt_nll, "response NLL": result.base_response_nll, **bench("base"),
             "seconds": 0.0}]
    for s in result.settings:
        rows.append({"model": s.name, "lambda_p": f"{s.prompt_weight:g}", "steps": s.steps,
                     "train loss": s.final_train_loss, "prompt NLL": s.heldout_prompt_nll,
                     "response NLL": s.heldout_response_nll, **bench(s.name), "seconds": s.train_seconds})
    return rows
