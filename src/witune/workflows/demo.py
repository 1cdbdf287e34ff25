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
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from witune.atomic import atomic_savefig, atomic_write_text
from witune.train.config import TrainConfig

if TYPE_CHECKING:  # witune.eval pulls in the harness: imported only where an evaluation runs
    from witune.eval.rows import MetricRow

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
    base, result_items = score_records(setup.load_model(base_cfg), heldout, pad)
    result = DemoResult(
        str(out), model, path, kind, n_train, len(heldout), base.prompt_nll_per_token, base.response_nll_per_token
    )
    result.response_nll_items["base"] = result_items
    shared = find_shared_data()
    bench = benchmark if benchmark and shared is not None and (shared / "eval").is_dir() else None

    def run_benchmark(name: str, model_path: str) -> None:
        if bench:
            from witune.models import resolve_model_path

            assert shared is not None  # bench is only set when the shared data folder exists

            rows, items = benchmark_with_items(
                resolve_model_path(model_path), bench, benchmark_limit, str(shared / "eval")
            )
            result.benchmarks[name], result.benchmark_items[name] = rows, items

    run_benchmark("base", model)
    for name, wp, wr in settings or SETTINGS:
        cfg = TrainConfig(
            **{**asdict(base_cfg), "prompt_weight": wp, "response_weight": wr, "output_dir": str(out / name)}
        )
        t0 = time.perf_counter()
        run = train(cfg, overwrite=True)  # the demo's own sub-folders: a re-run replaces them
        seconds = time.perf_counter() - t0
        from transformers import AutoModelForCausalLM

        s, result.response_nll_items[name] = score_records(
            AutoModelForCausalLM.from_pretrained(run.model_dir), heldout, pad
        )
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


def write_report(result: DemoResult) -> str:
    """The demo's models as a small sweep (base, conventional, weighted) scored on held-out per-role NLL,
    analysed and rendered by `witune.report` exactly like any sweep: `output_dir/report.html`."""
    import math
    import statistics

    import pandas as pd

    from witune.analysis.summary import analyze
    from witune.models.distance import weight_distance
    from witune.train.metrics import read_metrics

    rows: list[dict[str, Any]] = []
    losses: list[tuple[str, int, float]] = []

    def add(run_id: str, wp: float, wr: float, prompt_nll: float, response_nll: float, **extra: Any) -> None:
        # Only the response NLL is an outcome; the prompt NLL is what the weighted run was trained to lower, so it
        # is a diagnostic, shown in the headline section and kept out of every aggregate.
        # Its standard error (sd of the per-record NLLs / sqrt(n)) lets the report's noise guard say "within noise".
        items = [x for x in result.response_nll_items.get(run_id, []) if math.isfinite(x)]
        se = statistics.stdev(items) / math.sqrt(len(items)) if len(items) >= 2 else math.nan
        for metric, value in (("response_nll", response_nll),):
            rows.append(
                {
                    "run_id": run_id,
                    "model": result.model,
                    "dataset": Path(result.data).name,
                    "prompt_weight": wp,
                    "response_weight": wr,
                    "normalization": "nonzero",
                    "seed": 0,
                    "benchmark": "heldout",
                    "metric": metric,
                    "score": value,
                    "higher_is_better": False,
                    "stderr": se,
                    **extra,
                }
            )

    def add_benchmark(run_id: str, wp: float, wr: float, **extra: Any) -> None:
        # lm-eval gives no stderr with bootstrap_iters=0: the binomial SE of the per-item accuracies stands in
        items = result.benchmark_items.get(run_id, [])
        p = sum(items) / len(items) if items else math.nan
        binomial = math.sqrt(p * (1 - p) / len(items)) if len(items) >= 2 else math.nan
        for r in result.benchmarks.get(run_id, []):
            if r["metric"] != "acc":  # one benchmark, one vote: the headline metric only (acc_norm left out)
                continue
            rows.append(
                {
                    "run_id": run_id,
                    "model": result.model,
                    "dataset": Path(result.data).name,
                    "prompt_weight": wp,
                    "response_weight": wr,
                    "normalization": "nonzero",
                    "seed": 0,
                    "benchmark": r["task"].removeprefix("witune_"),
                    "metric": r["metric"],
                    "score": r["value"],
                    "higher_is_better": bool(r.get("higher_is_better", True)),
                    "stderr": binomial if (row_se := r["stderr"]) is None else float(row_se),
                    **extra,
                }
            )

    add("base", float("nan"), float("nan"), result.base_prompt_nll, result.base_response_nll)
    add_benchmark("base", float("nan"), float("nan"))
    for s in result.settings:
        distance = weight_distance(result.model, Path(s.model_dir))
        add(
            s.name,
            s.prompt_weight,
            s.response_weight,
            s.heldout_prompt_nll,
            s.heldout_response_nll,
            weight_distance=distance,
        )
        add_benchmark(s.name, s.prompt_weight, s.response_weight, weight_distance=distance)
        losses += [(s.name, int(m["step"]), float(m["loss"])) for m in read_metrics(s.metrics_path)]
    analysis = analyze(pd.DataFrame(rows), pd.DataFrame(losses, columns=["run_id", "step", "loss"]))
    title = f"witune demo: conventional vs weighted tuning of {result.model}"
    from witune.report.html import render

    page = render(analysis, title=title)
    # The headline goes first, above the sweep sections (witune.report has no slot for it: inserted after <h1>).
    page = page.replace("</h1>", "</h1>\n" + headline_html(result), 1)
    path = Path(result.output_dir) / "report.html"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return str(path)


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


def score_records(model: Any, rows: list, pad: int) -> tuple[Any, list[float]]:
    """(pooled Score, each record's response NLL per token): every record scored once, on its own (no padding),
    and the pooled score summed from them, so the paired SE and the totals come from the same single pass."""
    from dataclasses import replace

    from witune.eval.score import score

    each = [score(model, [r], pad, progress=False) for r in rows]
    total = replace(
        each[0],
        prompt_nll=sum(s.prompt_nll for s in each),
        prompt_tokens=sum(s.prompt_tokens for s in each),
        response_nll=sum(s.response_nll for s in each),
        response_tokens=sum(s.response_tokens for s in each),
        samples=sum(s.samples for s in each),
        weighted_sum=float("nan"),
        normalizer=float("nan"),
        loss=float("nan"),
    )
    return total, [s.response_nll_per_token for s in each]


def benchmark_with_items(
    model_path: str, task: str, limit: int | None, data_dir: str
) -> tuple[list[MetricRow], list[float]]:
    """The harness rows of one local task plus each item's 0/1 accuracy (lm-eval's logged samples, by doc_id)."""
    import tempfile

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from witune.eval.harness import make_lm, results_to_rows
    from witune.eval.local_tasks import write_local_tasks

    with tempfile.TemporaryDirectory(prefix="witune_tasks_") as tmp:
        write_local_tasks(tmp, data_dir)
        out = simple_evaluate(
            model=make_lm(model_path, batch_size=16),
            tasks=[task],
            num_fewshot=0,
            limit=limit,
            task_manager=TaskManager(include_path=tmp, include_defaults=False),
            log_samples=True,
            bootstrap_iters=0,
            random_seed=0,
            numpy_random_seed=0,
            torch_random_seed=0,
        )
    samples = sorted(out["samples"][task], key=lambda d: d["doc_id"])
    return results_to_rows(out), [float(d["acc"]) for d in samples]


def paired_difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of b - a over the same items and its paired standard error (sd of the differences / sqrt(n)).

    >>> mean, se = paired_difference([1, 0, 1, 1], [1, 1, 1, 0]); (mean, round(se, 3))
    (0.0, 0.408)
    """
    import math

    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired difference needs two equal-length lists of >= 2 items, got {len(a)} and {len(b)}")
    d = [y - x for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / (len(d) - 1)
    return mean, math.sqrt(var / len(d))


def verdict(diff: float, se: float, better_if_lower: bool) -> str:
    """ "within noise" when |diff| < 2 SE, else which way it went."""
    if (se == 0 and diff == 0) or abs(diff) < 2 * se:
        return "within noise"
    better = diff < 0 if better_if_lower else diff > 0
    return "better" if better else "worse"


def headline(result: DemoResult) -> list[str]:
    """The demo's honest summary: weighted vs conventional on response NLL and the benchmark, paired SEs."""
    import math

    names = [s.name for s in result.settings]
    if len(names) < 2:
        return []
    ref, alt = names[0], names[1]
    lines = []
    a, b = result.response_nll_items.get(ref, []), result.response_nll_items.get(alt, [])
    pairs = [(x, y) for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
    if len(pairs) >= 2:
        d, se = paired_difference([x for x, _ in pairs], [y for _, y in pairs])
        base = sum(x for x, _ in pairs) / len(pairs)
        lines.append(
            f"Held-out response NLL per token, mean over {len(pairs)} records (lower is better; the table "
            f"pools tokens instead): {ref} {base:.4f}, {alt} minus {ref} = {d:+.4f} ± {se:.4f} (paired SE), "
            f"{100 * d / base:+.1f}%: {verdict(d, se, better_if_lower=True)}."
        )
    a, b = result.benchmark_items.get(ref, []), result.benchmark_items.get(alt, [])
    if len(a) >= 2 and len(a) == len(b):
        ref_rows = result.benchmarks.get(ref, [])
        task = (ref_rows[0]["task"] if ref_rows else "benchmark").removeprefix("witune_")
        accs = {n: result.benchmark_items[n] for n in ["base", *names] if n in result.benchmark_items}
        means = {n: sum(v) / len(v) for n, v in accs.items()}
        # binomial SE of each model's accuracy on its own; the difference below uses the paired SE
        each = ", ".join(f"{n} {m:.3f} ± {math.sqrt(m * (1 - m) / len(accs[n])):.3f}" for n, m in means.items())
        d, se = paired_difference(a, b)
        same = " (every item answered alike)" if all(x == y for x, y in zip(a, b)) else ""
        lines.append(
            f"{task} accuracy (0-shot, {len(a)} items, chance 0.5): {each}. {alt} minus {ref} = "
            f"{d:+.3f} ± {se:.3f} (paired SE over the same items){same}: "
            f"{verdict(d, se, better_if_lower=False)}."
        )
    diag = {s.name: s.heldout_prompt_nll for s in result.settings}
    lines.append(
        "Diagnostics, not outcomes: held-out prompt NLL per token "
        + ", ".join(f"{n} {v:.4f}" for n, v in [("base", result.base_prompt_nll), *diag.items()])
        + f" ({alt} was trained on "
        "prompt tokens, so a lower prompt NLL is expected and says nothing about answer quality)."
    )
    return lines


def headline_html(result: DemoResult) -> str:
    import html

    items = "".join(f"<li>{html.escape(line)}</li>" for line in result.headline)
    return (
        f"<h2>Headline: {html.escape(' vs '.join(s.name for s in result.settings))}</h2>"
        f'<div class="rec"><ul>{items}</ul></div>'
        "<p class='reading'>Outcomes are the held-out response NLL and the benchmark accuracy; differences "
        'are weighted minus conventional with paired standard errors, "within noise" when under 2 SE. '
        "The sections below analyse the same runs as a small sweep.</p>"
    )
