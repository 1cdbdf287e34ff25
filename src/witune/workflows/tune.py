"""`witune tune DATA --model M`: "which prompt-loss weight for my data?" in one command, within a budget.

It measures the data (Rg, with the model's tokenizer), takes `witune recommend`'s PLW as the prior and runs it
first, searches the PLW grid (response weight 1) within the budget, scores every run on held-out records
(response NLL per token, paired across runs), and ends with one answer: the PLW, its interval, the evidence
it rests on, the training tokens spent against the full grid's, and `report.html`.

Underneath is an ordinary sweep folder (`sweep.yaml`, `sweep.db`, `runs/<run_id>/`): `witune sweep status`,
`witune analyze` and `witune report` read it like any sweep, `--resume` after a kill retrains nothing that
finished (and continues an interrupted run from its checkpoint), and `backend: ray` runs the points on Ray.

Searches (`search`):
* surface: the PLW paper's quadratic in wp, refitted after each run (`witune.analysis.surface`);
* halving: successive halving in three rungs, the first at a third of the run and past the warmup, with the
  rank guard at the second promotion (`witune.sweep.halving`);
* grid: every level;
* auto: surface for grids of up to `AUTO_SURFACE_MAX` levels (the papers' one-dimensional PLW axis, where the
  quadratic is the model they fitted); halving for larger grids, where one rung over many points is cheaper.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from witune.analysis import paired, surface
from witune.atomic import atomic_write_text
from witune.errors import ConfigError
from witune.flat_config import FiniteFloat, FlatConfig, at_least, one_of, optional
from witune.sweep.config import PLW_PAPER, SweepConfig

if TYPE_CHECKING:
    from witune.sweep.point import Point

SEARCHES = ("auto", "surface", "halving", "grid")
AUTO_SURFACE_MAX = 12
RUN_KEYS = ("backend", "workers", "ray_address", "progress")  # how to run, not what: may change on --resume
_BUDGET = re.compile(r"^\s*([0-9][0-9_.e+]*)\s*([kmg]?)\s*(runs?|tokens?|tok)?\s*$", re.IGNORECASE)


@dataclass
class TuneConfig(FlatConfig):
    """What `witune tune` searches, within what budget, scored how; `set` holds the training keys."""

    data: str = ""
    """Training data (any format witune reads)."""
    model: str = "smollm2"
    """Model to fine-tune: hub name, local folder, .gguf file, or smollm2."""
    base: str | None = None
    """Training config YAML (`witune train` keys) every run starts from; null: the training defaults."""
    set: dict[str, Any] = field(default_factory=dict)
    """Training keys applied to every run, e.g. {max_steps: 27, learning_rate: 1e-4}."""
    heldout: str | None = None
    """Held-out records whose response NLL scores every run; null: the last heldout_records records of data are
    held out (and not trained on)."""
    heldout_records: int = 40
    """Records split off the end of data when heldout is null."""
    budget: str = ""
    """Training budget: runs ('4', '4 runs') or training tokens ('250k tokens'); empty: a third of the grid's
    runs, at least 3 (the surface needs 3)."""
    search: str = "auto"
    """auto, surface, halving or grid (module docstring)."""
    grid: list[FiniteFloat] = field(default_factory=lambda: list(PLW_PAPER))
    """PLW levels of the full grid (response weight 1): the search chooses among them (and the prior)."""
    seed: int = 0
    """Training seed of every run."""
    eval_tasks: list[str] = field(default_factory=list)
    """lm-eval tasks and witune:<built-in> names run on every finished run, beside the held-out response NLL."""
    eval_limit: int | None = 200
    """Items per evaluation task (null: all)."""
    column: str = "all"
    """Table 4 column of the prior (`witune recommend --benchmarks`): all, mc or gen."""
    curve_every: int | None = None
    """With search: grid, also keep every run's held-out scores every N steps (the learning curves that
    `witune.workflows.replay` replays the other strategies from)."""
    halving_eta: int = 3
    """Successive halving: 1/eta of the points continue past the first rung."""
    backend: str = "local"
    """local or ray."""
    workers: int = 1
    """Points trained at the same time (the halving and grid searches; the surface runs one at a time)."""
    ray_address: str | None = None
    """Ray cluster address; null starts a local Ray instance."""
    output_dir: str = "tune"
    """The tune folder: tune.yaml, the sweep underneath, tune.json, report.html."""

    RANGES = {
        "search": one_of(SEARCHES),
        "heldout_records": at_least(2),
        "eval_limit": optional(at_least(1)),
        "column": one_of(("all", "mc", "gen")),
        "halving_eta": at_least(2),
        "backend": one_of(("local", "ray")),
        "workers": at_least(1),
    }

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from super().problems()
        if not self.data:
            yield "data", "is required: the training data to tune the weights for"
        if any(not 0 <= p <= 1 for p in self.grid) or len(set(self.grid)) < 3:
            yield "grid", "needs at least 3 distinct PLW levels in [0, 1]"
        if self.budget:
            parse_budget(self.budget)  # raises with the reason
        if self.curve_every and self.search != "grid":
            yield "curve_every", "needs search: grid (the learning curves of every level are stored)"
        for key in ("plw", "prompt_weight", "response_weight", "output_dir", "data", "model", "seed"):
            if key in self.set:
                yield "set", f"may not hold {key!r}: the tune sets it for every run"


@dataclass(frozen=True)
class Budget:
    runs: float | None = None
    tokens: float | None = None

    def runs_allowed(self, tokens_per_run: float) -> int:
        if self.tokens is not None:
            return int(self.tokens // tokens_per_run) if tokens_per_run > 0 else 0
        return int(self.runs or 0)

    def __str__(self) -> str:
        return f"{self.tokens:,.0f} tokens" if self.tokens is not None else f"{self.runs:g} runs"


def parse_budget(text: str) -> Budget:
    """'4', '4 runs' -> runs; '250k tokens', '2.5e5 tok' -> training tokens.

    >>> parse_budget("4"), parse_budget("250k tokens")
    (Budget(runs=4.0, tokens=None), Budget(runs=None, tokens=250000.0))
    """
    m = _BUDGET.match(text)
    try:
        if m is None:
            raise ValueError(text)
        value = float(m.group(1).replace("_", "")) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]
    except ValueError:
        raise ConfigError(f"budget {text!r}: expected runs ('4', '4 runs') or tokens ('250k tokens')") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"budget {text!r} must be a positive number of runs or tokens")
    unit = (m.group(3) or "runs").lower()
    return Budget(tokens=value) if unit.startswith("tok") else Budget(runs=value)


@dataclass
class TuneRun:
    """One run the search made: its PLW, run id, held-out score (mean over records) and tokens trained."""

    plw: float
    run_id: str
    score: float
    tokens: float
    items: list[float] = field(repr=False, default_factory=list)


@dataclass
class TuneResult:
    """The answer and what it rests on (written to tune.json)."""

    folder: str
    data: str
    model: str
    rg: float
    prior_plw: float
    search: str
    plw: float  # the answer
    stop: str  # why the search ended
    reading: str  # one sentence on the evidence
    search_plw: float = math.nan  # the search's own choice, before the noise rule against PLW 0
    ci_low: float = math.nan
    ci_high: float = math.nan
    evidence: str = ""  # the chosen run against PLW 0, paired over the held-out records
    runs: list[TuneRun] = field(default_factory=list)
    tokens: float = 0.0
    grid_tokens: float = 0.0
    budget: str = ""
    heldout: str = ""
    heldout_records: int = 0
    report: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.tokens / self.grid_tokens if self.grid_tokens else math.nan

    def headline(self) -> list[str]:
        lines = [
            f"PLW {self.plw:.3g} (prompt weight {self.plw:.3g}, response weight 1) for {self.data}: {self.reading}",
        ]
        if math.isfinite(self.ci_low):
            lines.append(f"95% interval of the optimum: PLW {self.ci_low:.3g} to {self.ci_high:.3g}")
        if self.evidence:
            lines.append(self.evidence)
        lines.append(
            f"search {self.search} ({self.stop}): {len(self.runs)} runs, {self.tokens:,.0f} training tokens = "
            f"{self.share:.2f} of the full grid's {self.grid_tokens:,.0f}; prior PLW {self.prior_plw:.3g} "
            f"(`witune recommend`, Rg {self.rg:.3g})"
        )
        lines.append(
            f"scores: held-out response NLL per token, {self.heldout_records} records of {self.heldout}, model "
            f"{self.model} fine-tuned by witune's engine (one seed per run: seed spread not measured)"
        )
        return lines


# --- preparing the folder ---------------------------------------------------------------------------------


def _fingerprint(path: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        return path
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _record(cfg: TuneConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["data_sha256"] = _fingerprint(cfg.data)
    d["heldout_sha256"] = _fingerprint(cfg.heldout) if cfg.heldout else None
    return d


def check_folder(cfg: TuneConfig, resume: bool) -> Path:
    """The tune folder: a new one, or (with resume) one whose tune.yaml asked for the same search. A folder
    holding only the data split of a tune refused before it trained counts as new."""
    from witune.yaml_io import load_yaml_file

    folder = Path(cfg.output_dir)
    recorded = folder / "tune.yaml"
    if not recorded.is_file():
        if folder.is_dir() and any(p.name != "data" for p in folder.iterdir()):
            raise ConfigError(f"{folder} is not empty and holds no tune.yaml: choose another output_dir (--out)")
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    if not resume:
        raise ConfigError(f"{folder} already holds a tune; continue it with --resume, or choose another --out")
    before = load_yaml_file(recorded) or {}
    now = _record(cfg)
    differ = sorted(k for k in set(before) | set(now) if k not in RUN_KEYS and before.get(k) != now.get(k))
    if differ:
        raise ConfigError(
            f"{recorded}: --resume with other settings than the tune being resumed ({', '.join(differ)} differ); "
            "resume with the same settings, or start a new tune with another --out"
        )
    return folder


def split_heldout(cfg: TuneConfig, folder: Path) -> tuple[str, str, int]:
    """(training data, held-out file, held-out records). Without `heldout`, the last `heldout_records` records
    of the data are written to the folder as held-out records and the others as the training file, both as JSON
    lines of the original records (so every format splits the same way)."""
    from witune.data import load_examples
    from witune.data.readers import read_records
    from witune.errors import DataError

    fmt = str(cfg.set.get("format", "auto"))
    load_examples(cfg.data, format=fmt)  # a bad record is named in the user's file, before anything is written
    if cfg.heldout:
        n = len(load_examples(cfg.heldout).examples)
        if n < 2:
            raise ConfigError(f"heldout {cfg.heldout}: {n} usable record(s); at least 2 are needed to pair runs")
        return cfg.data, cfg.heldout, n
    stem = Path(cfg.data).stem or "data"
    train, held = folder / "data" / f"{stem}.jsonl", folder / "data" / "heldout.jsonl"
    if not (train.is_file() and held.is_file()):
        records = []
        for _, rec in read_records(cfg.data):
            if isinstance(rec, DataError):
                raise rec
            records.append(rec)
        if len(records) < cfg.heldout_records + 2:
            raise ConfigError(
                f"{cfg.data}: {len(records)} records; holding out {cfg.heldout_records} leaves too few to train "
                "on (lower heldout_records, or give a heldout file)"
            )
        cut = len(records) - cfg.heldout_records
        lines = [json.dumps(r, ensure_ascii=False, default=str) for r in records]
        atomic_write_text(train, "\n".join(lines[:cut]) + "\n")
        atomic_write_text(held, "\n".join(lines[cut:]) + "\n")
    return str(train.resolve()), str(held.resolve()), cfg.heldout_records


def sweep_config(cfg: TuneConfig, folder: Path, train_data: str, heldout: str, levels: list[float], search: str):
    """The sweep underneath: every candidate PLW of the grid (and the prior), response weight 1."""
    from witune.sweep.config import sweep_config_from_dict

    raw: dict[str, Any] = {
        "set": {**cfg.set, "data": train_data, "model": cfg.model, "seed": cfg.seed},
        "plw": levels,
        "eval_tasks": list(cfg.eval_tasks),
        "eval_limit": cfg.eval_limit,
        "output_dir": str(folder),
        "backend": cfg.backend,
        "workers": cfg.workers,
        "ray_address": cfg.ray_address,
        "search": "halving" if search == "halving" else "grid",
        "halving_heldout": heldout,
        "halving_eta": cfg.halving_eta,
        "halving_rungs": 3,  # the second promotion is where the rank guard can compare two rankings
        "halving_first_rung": 1 / 3,
        "curve_every": cfg.curve_every,
    }
    if cfg.base:
        raw["base"] = str(Path(cfg.base).expanduser().resolve())
    return sweep_config_from_dict(raw, where="witune tune")


def prior_plw(cfg: TuneConfig, train_data: str) -> tuple[float, float]:
    """(Rg of the training data with the model's tokenizer, `witune recommend`'s PLW for it)."""
    from witune.data import load_examples
    from witune.stats import ratio_stats, recommend, sample_lengths
    from witune.stats.loading import get_tokenizer

    examples = load_examples(train_data, format=str(cfg.set.get("format", "auto"))).examples
    rg = ratio_stats(sample_lengths(examples, get_tokenizer(cfg.model))).ratio_of_means
    rec = recommend(rg, cfg.column)
    plw = rec.plw if math.isfinite(rec.plw) else 0.0
    return rg, float(min(max(round(plw, 4), 0.0), 1.0))


# --- running and scoring ----------------------------------------------------------------------------------


def heldout_items(folder: Path, point, heldout: str, limit: int | None, batch_size: int) -> list[float]:
    """Each held-out record's response NLL per token for a finished point; computed once, kept beside the run
    (the file successive halving writes for its last rung) and stored as the run's `heldout` score row."""
    from witune.eval.rows import metric_row
    from witune.sweep import db
    from witune.sweep.halving import Heldout, heldout_score, rung_items, rung_items_path
    from witune.sweep.rows import tag_rows
    from witune.sweep.runner import run_dir

    steps = _steps(folder, point)
    items = rung_items(folder, point.run_id, steps)
    if items is None:
        _, items = heldout_score(point, run_dir(folder, point.run_id) / "model", Heldout(heldout, limit, batch_size))
        atomic_write_text(rung_items_path(folder, point.run_id, steps), json.dumps(items))
    finite = [x for x in items if math.isfinite(x)]
    row = metric_row("heldout", "response_nll", sum(finite) / len(finite), paired.mean_se(finite), higher=False)
    db.write_eval_rows(folder, point.run_id, tag_rows([row]))
    return items


def _steps(folder: Path, point) -> int:
    """The optimizer steps the finished point trained (metrics.jsonl's last step)."""
    from witune.sweep.runner import read_losses, run_dir

    losses = read_losses(run_dir(folder, point.run_id) / "metrics.jsonl")
    return losses[-1][0] if losses else int(point.train.max_steps)


def _tokens(folder: Path, run_id: str) -> float:
    from witune.sweep.halving import trained_tokens
    from witune.sweep.runner import run_dir

    return trained_tokens(run_dir(folder, run_id) / "metrics.jsonl", 10**12)


def halving_cost(n_points: int, steps: list[int], eta: int) -> float:
    """Runs' worth of training successive halving spends at most: from the second promotion on, its rank guard
    may promote ceil(2n/eta) instead of ceil(n/eta) (the first has no earlier ranking to compare with).

    >>> halving_cost(10, [9, 27], 3)  # 10 points x 1/3 of a run, then 4 points x the other 2/3
    6.0
    >>> halving_cost(7, [9, 18, 27], 3)  # 7 x 9 steps, 3 x 9 more, at most 2 x 9 more: 108 of 27-step runs
    4.0
    """
    total, alive, done = 0.0, n_points, 0
    for k, s in enumerate(steps):
        total += alive * (s - done) / steps[-1]
        done = s
        alive = min(alive, math.ceil((2 if k > 0 else 1) * alive / eta))
    return round(total, 6)


def run_tune(cfg: TuneConfig, resume: bool = False, progress: bool = True, on_run: Callable | None = None):
    """The whole tune (module docstring); returns its `TuneResult`. `on_run(TuneRun)` after each scored run."""
    from witune.sweep.grid import expand
    from witune.sweep.preflight import check_names
    from witune.train.setup import planned_tokens

    cfg.validate()
    folder = check_folder(cfg, resume)
    train_data, heldout, n_heldout = split_heldout(cfg, folder)
    rg, prior = prior_plw(cfg, train_data)
    levels = sorted({*map(float, cfg.grid), prior})
    search = cfg.search
    if search == "auto":
        search = "surface" if len(cfg.grid) <= AUTO_SURFACE_MAX else "halving"
    scfg = sweep_config(cfg, folder, train_data, heldout, levels, search)
    points = {float(p.labels.prompt_weight or 0.0): p for p in expand(scfg)}  # every point has a PLW here
    check_names(scfg, list(points.values()))
    steps, per_run = planned_tokens(points[prior].train_config(folder / "plan"))
    budget = parse_budget(cfg.budget) if cfg.budget else Budget(runs=max(3, len(cfg.grid) // 3))
    allowed = budget.runs_allowed(per_run)
    need = {"grid": len(levels), "halving": halving_cost(len(levels), scfg.rung_steps(), cfg.halving_eta)}.get(search)
    if allowed < 1 or (need is not None and allowed < need) or (search == "surface" and allowed < 3):
        what = f"{need:g} runs" if need is not None else "3 runs (the surface's first curve)"
        raise ConfigError(
            f"budget {budget} allows {allowed} run(s) of {per_run:,} training tokens ({steps} steps); the {search} "
            f"search needs {what}: raise --budget or choose another --search"
        )
    if not (folder / "tune.yaml").is_file():  # every check passed: from here on the folder is this tune's
        import yaml

        atomic_write_text(folder / "tune.yaml", yaml.safe_dump(_record(cfg), sort_keys=False))
    result = TuneResult(
        str(folder), cfg.data, cfg.model, rg, prior, search, math.nan, "", "", budget=str(budget), heldout=heldout
    )
    result.heldout_records = n_heldout
    result.grid_tokens = float(per_run * len(cfg.grid))
    limit, batch = scfg.halving_heldout_limit, scfg.eval_batch_size
    scored: dict[float, TuneRun] = {}

    with _progress(allowed, str(budget), progress) as bar:

        def score(plw: float) -> TuneRun:
            p = points[plw]
            items = heldout_items(folder, p, heldout, limit, batch)
            run = TuneRun(plw, p.run_id, sum(items) / len(items), _tokens(folder, p.run_id), items)
            if plw not in scored and on_run is not None:
                on_run(run)
            scored[plw] = run
            bar(run)
            return run

        search_in = _run_surface if search == "surface" else _run_sweep
        search_in(result, scfg, folder, points, levels, allowed, score)
    result.runs = [scored[p] for p in sorted(scored)]
    result.tokens = sum(r.tokens for r in result.runs) + _stopped_tokens(folder, scored)
    result.search_plw = result.plw
    _evidence(result, scored)
    return result


Scorer = Callable[[float], "TuneRun"]  # trains nothing: scores a finished run (and shows it on the progress bar)


def _run_surface(
    result: TuneResult,
    scfg: SweepConfig,
    folder: Path,
    points: dict[float, Point],
    levels: list[float],
    allowed: int,
    score: Scorer,
) -> None:
    """The surface search, one run at a time, each registered in the sweep as the search asks for it."""
    import yaml

    from witune.sweep import db
    from witune.sweep.orchestrate import _record as sweep_record
    from witune.sweep.orchestrate import folder_lock, run_points
    from witune.sweep.ray_backend import backend_session

    with folder_lock(folder), backend_session(scfg):  # one Ray instance for the whole search (backend: ray)
        atomic_write_text(folder / "sweep.yaml", yaml.safe_dump(sweep_record(scfg), sort_keys=False))

        def evaluate(plw: float) -> surface.Run:
            p = points[plw]
            db.add_points(db.db_path(folder), [p])
            if _status(folder, p.run_id)[0] != "done":  # a finished run is read back, never trained again
                run_points(scfg, folder, [p.run_id], lambda rid, outcome: None)
            status, error = _status(folder, p.run_id)
            if status != "done":
                raise ConfigError(f"the run at PLW {plw:g} ({p.run_id}) failed: {error}; --resume retries it")
            return surface.Run(plw, tuple(score(plw).items))

        runs, decision = surface.search(evaluate, levels, result.prior_plw, allowed)
    fit = surface.fit_surface(runs)
    result.plw, result.stop, result.reading = float(decision.answer or 0.0), str(decision.stop), decision.reason
    if fit is not None and fit.shape == "interior optimum":
        result.ci_low, result.ci_high = fit.ci_low, fit.ci_high


def _run_sweep(
    result: TuneResult,
    scfg: SweepConfig,
    folder: Path,
    points: dict[float, Point],
    levels: list[float],
    allowed: int,
    score: Scorer,
) -> None:
    """The grid or successive halving: an ordinary `witune sweep` run, then every finished run scored."""
    from witune.sweep import db
    from witune.sweep.orchestrate import run_sweep

    summary = run_sweep(scfg, resume=True, progress=False)
    if summary.failed:  # an answer from the runs that happened to finish would be a silently different search
        raise ConfigError(
            f"{summary.failed} run(s) of the {result.search} search failed: see `witune sweep status {folder}`; "
            "--resume retries them"
        )
    done = {r["run_id"] for r in db.runs(folder) if r["status"] == "done"}
    scored = [score(plw) for plw, p in points.items() if p.run_id in done]
    best = min(scored, key=lambda r: r.score)
    result.plw, result.stop = best.plw, f"{result.search} finished"
    result.reading = f"the lowest held-out response NLL of the {len(scored)} finished runs ({best.score:.4f})"
    fit = surface.fit_surface([surface.Run(r.plw, tuple(r.items)) for r in scored])
    if fit is not None:
        result.reading += f"; the fitted curve: {fit.reading()}"


def _status(folder: Path, run_id: str) -> tuple[str | None, str | None]:
    from witune.sweep import db

    row = next((r for r in db.runs(folder) if r["run_id"] == run_id), None)
    return (row["status"], row.get("error")) if row else (None, None)


def _stopped_tokens(folder: Path, scored: dict[float, TuneRun]) -> float:
    """Tokens of points successive halving stopped early (they count against the budget too)."""
    from witune.sweep import db

    finished = {r.run_id for r in scored.values()}
    return sum(_tokens(folder, r["run_id"]) for r in db.runs(folder) if r["run_id"] not in finished)


def _evidence(result: TuneResult, scored: dict[float, TuneRun]) -> None:
    """The chosen run against conventional tuning (PLW 0), paired over the same held-out records; a choice
    within noise of PLW 0 becomes "keep conventional tuning" (the noise guard's rule)."""
    chosen = min(scored.values(), key=lambda r: abs(surface.to_wp(r.plw) - surface.to_wp(result.plw)))
    base = scored.get(0.0)
    if base is None or chosen.plw == 0.0:
        result.evidence = "PLW 0 (conventional tuning) was not run: no paired comparison" if base is None else ""
        return
    c = paired.compare(base.items, chosen.items, better_if_lower=True)
    if c is None:
        return
    result.evidence = (
        f"run at PLW {chosen.plw:.3g} against PLW 0: held-out response NLL {c.diff:+.4f} ± {c.se:.4f} (paired "
        f"over {c.n} records): {c.verdict}"
    )
    if c.verdict != "better":
        result.notes.append(
            f"the search pointed to PLW {result.plw:.3g}, but its run is not better than PLW 0 beyond noise: keep "
            "conventional tuning (PLW 0)"
        )
        result.plw, result.ci_low, result.ci_high = 0.0, math.nan, math.nan


class _progress:
    """A progress bar over the budget's runs (rich, on stderr); calling it records one scored run."""

    def __init__(self, total: int, budget: str, enabled: bool):
        self.total, self.budget, self.enabled = total, budget, enabled
        self.bar: Any = None
        self.task: Any = None
        self.tokens = 0.0

    def __enter__(self) -> _progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("tune"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
                console=Console(stderr=True),
            )
            self.bar.__enter__()
            self.task = self.bar.add_task(f"budget {self.budget}", total=self.total)
        return self

    def __call__(self, run: TuneRun) -> None:
        self.tokens += run.tokens
        if self.bar is not None:
            self.bar.update(
                self.task,
                advance=1,
                description=f"PLW {run.plw:.3g}: held-out NLL {run.score:.4f}; {self.tokens:,.0f} tokens of {self.budget}",
            )

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


# --- what the tune leaves behind ---------------------------------------------------------------------------


def write_outputs(result: TuneResult, progress: bool = False) -> TuneResult:
    """tune.json (the answer, every run's scores), surface.png and report.html (the answer first, then the
    analysis every sweep gets: `witune report` on the folder gives the same sections below the answer)."""
    from witune.report.html import fig_to_img, findings_section, write_html_report
    from witune.workflows.analysis import analyze_results

    folder = Path(result.folder)
    fig = plot_runs(result)
    lead = [
        findings_section(
            "Answer: which prompt-loss weight for this data",
            [*result.headline(), *result.notes],
            "Lower held-out response NLL is better. Paired differences are over the same held-out records, "
            "'within noise' below 2 standard errors. One seed per run: the spread between seeds is not in these "
            "intervals.",
        )
        + fig_to_img(fig, "held-out response NLL against wp = PLW^0.30103")
    ]
    if (storage := record_study(folder, result.runs)) is not None:
        result.notes.append(f"every run is a finished trial of the Optuna study 'witune-tune' in {storage}")
    analysis = analyze_results(folder, engine="python", n_boot=0, progress=progress)
    result.report = str(write_html_report(analysis, folder / "report.html", "witune tune", lead=lead))
    atomic_write_text(folder / "tune.json", json.dumps(dataclasses.asdict(result), indent=1, default=_json_safe))
    return result


def record_study(folder: Path, runs: list[TuneRun]) -> str | None:
    """Every scored run as a finished trial (its PLW, its held-out NLL) of the Optuna study 'witune-tune' in
    `folder/optuna.db`, rebuilt from the runs each time, so Optuna's tools (optuna-dashboard, its plots, a sampler
    continuing the study) read the tune; None when Optuna is not installed (the `tune` extra)."""
    try:
        import optuna
    except ImportError:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage, name = f"sqlite:///{(folder / 'optuna.db').resolve()}", "witune-tune"
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:  # no such study yet
        pass
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
    space: dict[str, optuna.distributions.BaseDistribution] = {
        "prompt_weight": optuna.distributions.FloatDistribution(0.0, 1.0)
    }
    for r in runs:
        attrs = {"run_id": r.run_id, "tokens": r.tokens, "response_weight": 1.0}
        study.add_trial(
            optuna.trial.create_trial(
                params={"prompt_weight": r.plw}, distributions=space, value=r.score, user_attrs=attrs
            )
        )
    return storage


def _json_safe(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else str(x)


def plot_runs(result: TuneResult):
    """Each run's held-out response NLL (mean over records, paired SE against PLW 0 as the bar where PLW 0 ran)
    against wp, the fitted quadratic and the answer's interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from witune.plotting import plot_text

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    base = next((r for r in result.runs if r.plw == 0.0), None)
    for r in result.runs:
        c = paired.compare(base.items, r.items, True) if base is not None and r is not base else None
        se = c.se if c is not None else paired.mean_se(r.items)
        ax.errorbar(float(surface.to_wp(r.plw)), r.score, yerr=2 * se, fmt="o", color="tab:blue", capsize=3)
    fit = surface.fit_surface([surface.Run(r.plw, tuple(r.items)) for r in result.runs])
    if fit is not None:
        wp = np.linspace(0, 1, 101)
        ax.plot(wp, fit.predict(wp), color="tab:orange", label=f"quadratic in wp ({plot_text(fit.shape)})")
    if math.isfinite(result.ci_low):
        ax.axvspan(float(surface.to_wp(result.ci_low)), float(surface.to_wp(result.ci_high)), alpha=0.15)
    ax.axvline(float(surface.to_wp(result.plw)), color="tab:green", ls="--", label=f"answer PLW {result.plw:.3g}")
    ax.set_xlabel("wp = PLW ** 0.30103")
    ax.set_ylabel("held-out response NLL / token")
    ax.set_title(plot_text(f"{Path(result.data).name} on {result.model}: bars 2 paired SE vs PLW 0"), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from witune.atomic import atomic_savefig

    atomic_savefig(fig, Path(result.folder) / "surface.png")
    return fig
