"""`witune demo`: fine-tune SmolLM2-135M offline at a conventional and a weighted setting, then score both.

Data: the first `n_train` records of a small real instruction file (`alpaca_seed_tasks.jsonl` in the shared
data folder, when present); otherwise a generated set of tasks with checkable answers (`witune.train.synthetic`).
Held-out: the next `n_eval` records, scored per role (prompt / response NLL per token) for the base model and
each trained model. Everything stays on CPU-friendly sizes: the whole demo is meant to finish in ~10 minutes
on 2 CPU cores.

The headline (why it is built this way): the weighted model is *trained* to lower the prompt NLL, so a gain in
held-out prompt NLL is tautological; it is shown only as a diagnostic. The headline compares the models on
(1) held-out *response* NLL and (2) PIQA accuracy (0-shot, lm-eval's own task on the local file), a benchmark
on which a 135M model is well above chance (SmolLM2-135M ~0.6-0.7 vs chance 0.5; ARC-Challenge sat at chance
0.26 for every model). Both differences come with a *paired* standard error over the same records / items
(per-item differences, so the shared item difficulty cancels), and are called "within noise" below 2 SE.

It is built from the calls a user makes: `witune.train.train`, `witune.eval` (per-record scores, per-item
harness results), a results table in the schema every sweep writes (`witune.results_schema`), analysed and
reported as a sweep is (`witune.workflows.analyze_results`, `witune.report`); the statistics are
`witune.analysis.paired`'s.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from witune.analysis import paired
from witune.atomic import atomic_savefig, atomic_write_text
from witune.eval.local_tasks import CHANCE
from witune.train.config import TrainConfig

if TYPE_CHECKING:
    from witune.eval.rows import MetricRow
    from witune.results_schema import ResultRow

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
    benchmarks: dict[str, list[MetricRow]] = field(default_factory=dict)  # run name -> harness rows
    # run name -> per-item 0/1 accuracy of the benchmark, in item order (for paired standard errors)
    benchmark_items: dict[str, list[float]] = field(default_factory=dict)
    # run name -> per-record held-out response NLL per token (for paired standard errors)
    response_nll_items: dict[str, list[float]] = field(default_factory=dict)
    headline: list[str] = field(default_factory=list)
    seconds: float = 0.0
    plot: str | None = None
    report: str | None = None  # the HTML report (witune.report), written last


def find_shared_data() -> Path | None:
    """The first of `witune.shared_data`'s candidate folders that holds the demo's file (resolved), else None."""
    from witune.shared_data import shared_data_candidates

    for c in shared_data_candidates():
        if (c / SHARED_FILE).is_file():
            return c.resolve()
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


def run_demo(
    output_dir: str | Path = "runs/demo",
    model: str = "smollm2",
    data: str | None = None,
    n_train: int = 64,
    n_eval: int = 40,
    max_length: int = 160,
    batch_size: int = 2,
    learning_rate: float = 1e-4,
    settings: list[tuple[str, float, float]] | None = None,
    progress: bool = True,
    benchmark: str | None = "witune_piqa",
    benchmark_limit: int = 200,
) -> DemoResult:
    """Train every setting for one epoch over `n_train` records, score the held-out records and, where the
    shared evaluation files are present, run a benchmark (0-shot, `benchmark_limit` items) on every model."""
    from witune.data import RoleWeights, load_examples, tokenize_examples
    from witune.eval.score import score_each
    from witune.models import load_model
    from witune.train import setup
    from witune.train.engine import train

    start = time.perf_counter()
    out = Path(output_dir)
    path, kind = demo_data(out, n_train + n_eval, data)
    examples = load_examples(path, limit=n_train + n_eval).examples
    if len(examples) <= n_train:
        from witune.data.errors import ConfigError

        raise ConfigError(f"{path}: {len(examples)} records; the demo needs more than n_train={n_train}")
    base_cfg = TrainConfig(
        model=model,
        data=path,
        limit=n_train,
        max_length=max_length,
        learning_rate=learning_rate,
        epochs=1,
        per_device_batch_size=batch_size,
        # The same samples, steps and loss as padded batches of the full logits, for less work: no padding
        # (each micro-batch joined into one row), the loss from hidden states in chunks (prompt rows of a
        # zero weight skip the LM head).
        pack="padding_free",
        chunked_loss=True,
        warmup_ratio=0.1,
        seed=0,
        progress=progress,
    )
    tokenizer = setup.load_tokenizer(base_cfg)
    # Scoring weights 1/1: the per-role NLLs do not depend on them, and every held-out token is scored.
    heldout = tokenize_examples(
        examples[n_train:], tokenizer, RoleWeights(1.0, 1.0), max_length=max_length, on_error="skip"
    ).rows
    pad = setup.pad_id(tokenizer)
    base, result_items = score_each(setup.load_model(base_cfg), heldout, pad)
    result = DemoResult(
        str(out), model, path, kind, n_train, len(heldout), base.prompt_nll_per_token, base.response_nll_per_token
    )
    result.response_nll_items["base"] = result_items
    shared = find_shared_data()
    bench = benchmark if benchmark and shared is not None and (shared / "eval").is_dir() else None

    def run_benchmark(name: str, model_path: str) -> None:
        if bench:
            from witune.eval.items import harness_items
            from witune.models import resolve_model_path

            assert shared is not None  # bench is only set when the shared data folder exists
            rows, items = harness_items(resolve_model_path(model_path), bench, benchmark_limit, str(shared / "eval"))
            result.benchmarks[name], result.benchmark_items[name] = rows, items

    run_benchmark("base", model)
    for name, wp, wr in settings or SETTINGS:
        cfg = TrainConfig(
            **{**asdict(base_cfg), "prompt_weight": wp, "response_weight": wr, "output_dir": str(out / name)}
        )
        t0 = time.perf_counter()
        run = train(cfg, overwrite=True)  # the demo's own sub-folders: a re-run replaces them
        seconds = time.perf_counter() - t0
        s, result.response_nll_items[name] = score_each(load_model(str(run.model_dir)), heldout, pad)
        result.settings.append(
            SettingResult(
                name,
                wp,
                wr,
                str(run.model_dir),
                str(run.metrics_path),
                run.steps,
                run.final_loss,
                s.prompt_nll_per_token,
                s.response_nll_per_token,
                seconds,
            )
        )
        run_benchmark(name, str(run.model_dir))
    result.plot = str(plot_losses(result, out / "train_loss.png"))
    result.headline = headline(result)
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


def result_rows(result: DemoResult, name: str) -> list[ResultRow]:
    """One model's measurements as the results rows every sweep writes: held-out response NLL (the outcome;
    the prompt NLL is what the weighted run was trained to lower, so it stays in the headline as a diagnostic),
    the benchmark's accuracy, and for trained models the distance moved from the base weights."""
    from witune.eval.rows import metric_row
    from witune.sweep.rows import WEIGHT_DISTANCE, tag_rows

    nll = (
        result.base_response_nll
        if name == "base"
        else next(s for s in result.settings if s.name == name).heldout_response_nll
    )
    items = [x for x in result.response_nll_items.get(name, []) if math.isfinite(x)]
    rows = [metric_row("heldout", "response_nll", nll, paired.mean_se(items), higher=False)]
    accuracy = result.benchmark_items.get(name, [])
    for r in result.benchmarks.get(name, []):
        if r["metric"] == "acc":  # one benchmark, one vote: the headline metric only (acc_norm left out)
            # lm-eval gives no stderr with bootstrap_iters=0: the binomial SE of the per-item accuracies stands in
            rows.append({**r, "stderr": paired.binomial_se(accuracy) if r["stderr"] is None else r["stderr"]})
    setting = next((s for s in result.settings if s.name == name), None)
    if setting is not None:
        from witune.models.distance import weight_distance

        distance = weight_distance(result.model, Path(setting.model_dir))
        rows.append(metric_row(WEIGHT_DISTANCE, "l2", distance, None, higher=False))
    return tag_rows(rows)


def write_report(result: DemoResult) -> str:
    """The demo's models as a small sweep (base, conventional, weighted): their results table and losses
    written as a user's would be (`results.csv`, `losses.csv` in the output folder), analysed and rendered by
    the same calls as `witune report results.csv --losses losses.csv`, the headline first:
    `output_dir/report.html`."""
    import pandas as pd

    from witune.report.html import findings_section, write_html_report
    from witune.results_schema import Labels, results_table
    from witune.train.metrics import read_metrics
    from witune.workflows.analysis import analyze_results

    out = Path(result.output_dir)
    dataset = Path(result.data).name
    runs = [("base", Labels(result.model, dataset, math.nan, math.nan, "nonzero", 0), result_rows(result, "base"))]
    runs += [
        (
            s.name,
            Labels(result.model, dataset, s.prompt_weight, s.response_weight, "nonzero", 0),
            result_rows(result, s.name),
        )
        for s in result.settings
    ]
    losses = [(s.name, int(m["step"]), float(m["loss"])) for s in result.settings for m in read_metrics(s.metrics_path)]
    atomic_write_text(out / "results.csv", results_table(runs).to_csv(index=False))
    atomic_write_text(out / "losses.csv", pd.DataFrame(losses, columns=["run_id", "step", "loss"]).to_csv(index=False))
    analysis = analyze_results(out / "results.csv", out / "losses.csv", engine="python", n_boot=0, progress=False)
    headline_section = findings_section(
        f"Headline: {' vs '.join(s.name for s in result.settings)}",
        result.headline,
        "Outcomes are the held-out response NLL and the benchmark accuracy; differences are weighted minus "
        'conventional with paired standard errors, "within noise" when under 2 SE. The sections below analyse '
        "the same runs as a small sweep.",
    )
    title = f"witune demo: conventional vs weighted tuning of {result.model}"
    return str(write_html_report(analysis, out / "report.html", title, lead=[headline_section]))


def summary_rows(result: DemoResult) -> list[dict[str, Any]]:
    """One row per model (base + settings) for the CLI table (where each model went is printed below it)."""

    def bench(name: str) -> dict[str, Any]:
        acc = [r["value"] for r in result.benchmarks.get(name, []) if r["metric"] == "acc"]
        rows = result.benchmarks.get(name, [])
        task = (rows[0]["task"] if rows else "benchmark").removeprefix("witune_")
        return {f"{task} acc": acc[0]} if acc else {}

    rows = [
        {
            "model": "base (untrained)",
            "lambda_p": "-",
            "steps": 0,
            "train loss": float("nan"),
            "response NLL": result.base_response_nll,
            **bench("base"),
            "prompt NLL (diagnostic)": result.base_prompt_nll,
            "seconds": 0.0,
        }
    ]
    for s in result.settings:
        rows.append(
            {
                "model": s.name,
                "lambda_p": f"{s.prompt_weight:g}",
                "steps": s.steps,
                "train loss": s.final_train_loss,
                "response NLL": s.heldout_response_nll,
                **bench(s.name),
                "prompt NLL (diagnostic)": s.heldout_prompt_nll,
                "seconds": s.train_seconds,
            }
        )
    return rows


def headline(result: DemoResult) -> list[str]:
    """The demo's honest summary: weighted vs conventional on response NLL and the benchmark, paired SEs."""
    names = [s.name for s in result.settings]
    if len(names) < 2:
        return []
    ref, alt = names[0], names[1]
    lines = []
    nll = paired.compare(result.response_nll_items.get(ref, []), result.response_nll_items.get(alt, []), True)
    if nll is not None:
        lines.append(
            f"Held-out response NLL per token, mean over {nll.n} records (lower is better; the table "
            f"pools tokens instead): {ref} {nll.mean_a:.4f}, {alt} minus {ref} = {nll.diff:+.4f} ± {nll.se:.4f} "
            f"(paired SE), {100 * nll.diff / nll.mean_a:+.1f}%: {nll.verdict}."
        )
    acc = paired.compare(result.benchmark_items.get(ref, []), result.benchmark_items.get(alt, []), False)
    if acc is not None:
        ref_rows = result.benchmarks.get(ref, [])
        task = (ref_rows[0]["task"] if ref_rows else "benchmark").removeprefix("witune_")
        accs = {n: result.benchmark_items[n] for n in ["base", *names] if n in result.benchmark_items}
        # each model's accuracy with its own binomial SE; the difference uses the paired SE
        each = ", ".join(f"{n} {sum(v) / len(v):.3f} ± {paired.binomial_se(v):.3f}" for n, v in accs.items())
        same = " (every item answered alike)" if acc.identical else ""
        chance = f", chance {CHANCE[task]}" if task in CHANCE else ""  # no claim for a benchmark not in the table
        lines.append(
            f"{task} accuracy (0-shot, {acc.n} items{chance}): {each}. {alt} minus {ref} = "
            f"{acc.diff:+.3f} ± {acc.se:.3f} (paired SE over the same items){same}: {acc.verdict}."
        )
    diag = {s.name: s.heldout_prompt_nll for s in result.settings}
    lines.append(
        "Diagnostics, not outcomes: held-out prompt NLL per token "
        + ", ".join(f"{n} {v:.4f}" for n, v in [("base", result.base_prompt_nll), *diag.items()])
        + f" ({alt} was trained on "
        "prompt tokens, so a lower prompt NLL is expected and says nothing about answer quality)."
    )
    return lines
