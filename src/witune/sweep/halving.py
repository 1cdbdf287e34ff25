"""Successive halving over a sweep's configurations (`search: halving`, local or Ray backend).

Rule: every point trains the first rung (`SweepConfig.rung_steps`), stopping there with a checkpoint
(`stop_at_step`: the learning-rate schedule stays that of the whole run). Each point is scored on the held-out
records' response NLL per token (`witune.eval.score`). Within each (model, dataset) the configurations (weights x
normalisation x variant; the seeds of one configuration are replicates, ranked by their mean) are ranked, the best
ceil(n / eta) are promoted and continue from their checkpoints (`--resume`: the same steps as an uninterrupted
run), the others stop. The last rung trains to max_steps and runs the point's evaluation like a grid point.

Every rung's score, tokens and outcome go into `sweep.db`'s `rungs` table before the next rung starts, so a
killed sweep rerun with `--resume` continues at the rung it was in (points with a recorded rung are not
retrained; the others resume from their newest checkpoint). A stopped point keeps its checkpoint: a later
`search: grid` sweep over the same folder trains it to the end from there. A point's `attempts` in `runs` counts
each rung it started (a retry after a kill adds one more).

With `backend: ray` each rung's points are Ray tasks (`rung_work`, no database access on the workers) and the
driver records them and decides each rung, by the same rule. Not Ray Tune's ASHA: ASHA promotes a trial
against whichever trials reached its rung before it, so its choice depends on the order they finish in; this
rule ranks a rung once all its points are in, so the local and Ray backends choose the same configuration.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections import defaultdict
from functools import partial
from pathlib import Path

from witune.atomic import atomic_write_text
from witune.sweep import db
from witune.sweep.config import SweepConfig
from witune.sweep.local import Report, run_local
from witune.sweep.point import Point
from witune.sweep.ray_backend import backend_session
from witune.sweep.runner import PointResult, check_data, execute_point, output_to, run_dir
from witune.sweep.stage import PointError, train_stage


@dataclasses.dataclass(frozen=True)
class Heldout:
    """The records that rank the points, and how they are scored."""

    path: str
    limit: int | None
    batch_size: int


def heldout_score(point: Point, model_dir: Path, heldout: Heldout) -> tuple[float, list[float]]:
    """Response NLL per token of the model in `model_dir` on the held-out records, rendered as the point's training
    data is (template, max_length, truncation); every response token counts, whatever the point's weights. Also
    each record's own response NLL per token (the same records in the same order for every point: paired)."""
    from witune.data import RoleWeights, load_examples
    from witune.data.pipeline import tokenize_examples
    from witune.eval.score import score_each
    from witune.models import load_model, load_tokenizer
    from witune.train import setup

    t = point.train
    tokenizer = load_tokenizer(str(model_dir))
    examples = load_examples(heldout.path, limit=heldout.limit).examples
    rows = tokenize_examples(
        examples,
        tokenizer,
        RoleWeights(1.0, 1.0),
        template=t.template,
        max_length=t.max_length,
        truncation=t.truncation,
        final_turn_only=t.final_turn_only,
        on_error="skip",
    ).rows
    if not rows:
        raise PointError(f"halving_heldout {heldout.path}: no record could be scored")
    pooled, items = score_each(load_model(str(model_dir)), rows, setup.pad_id(tokenizer))
    return pooled.response_nll_per_token, items


def trained_tokens(metrics_file: Path, steps: int) -> float:
    """Tokens of the logged optimizer steps up to `steps` (metrics.jsonl; every step when log_every is 1)."""
    if not metrics_file.is_file():
        return 0.0
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    return float(sum(r.get("tokens", 0.0) for r in rows if int(r["step"]) <= steps))


@dataclasses.dataclass
class RungOutcome:
    """What one point's rung produced (no database touched: a Ray worker returns it to the driver)."""

    score: float  # held-out response NLL per token after the rung
    tokens: float  # training tokens of the point so far
    result: PointResult | None = None  # the last rung, when it trained the point: its rows and losses
    items: list[float] = dataclasses.field(default_factory=list)  # each held-out record's response NLL per token


def rung_work(point: Point, out: Path, trained: bool, *, steps: int, final: bool, heldout: Heldout) -> RungOutcome:
    """Train one point to `steps` (the last rung: the whole point, evaluated as in a grid, unless `trained`
    already) and score it on the held-out records. Raises on failure; touches no database."""
    result = None
    if final:
        result = None if trained else execute_point(point, out)
        model_dir = out / "model"
    else:
        check_data(point.train.data)
        cfg = dataclasses.replace(point.train_config(out), stop_at_step=steps)
        model_dir = train_stage("sft", cfg, out, finished=False)
    value, items = heldout_score(point, model_dir, heldout)
    return RungOutcome(value, trained_tokens(out / "metrics.jsonl", steps), result, items)


def record_outcome(sweep_dir: str | Path, run_id: str, outcome: RungOutcome, *, rung: int, steps: int) -> None:
    """Record a rung in the database (the driver's job): the finished point's rows first, then the rung."""
    if outcome.result is not None:
        db.finish_run(sweep_dir, run_id, outcome.result.rows, outcome.result.losses)
    atomic_write_text(rung_items_path(sweep_dir, run_id, steps), json.dumps(outcome.items))
    db.record_rung(sweep_dir, run_id, rung, steps, outcome.score, outcome.tokens)


def rung_items_path(sweep_dir: str | Path, run_id: str, steps: int) -> Path:
    """Where a rung's per-record held-out scores are kept (the rank guard pairs them across points)."""
    return run_dir(sweep_dir, run_id) / f"heldout_step{steps}.json"


def rung_items(sweep_dir: str | Path, run_id: str, steps: int) -> list[float] | None:
    path = rung_items_path(sweep_dir, run_id, steps)
    return json.loads(path.read_text()) if path.is_file() else None


def ranking_moved(before: dict[str, float], after: dict[str, list[float]]) -> list[tuple[str, str]]:
    """Pairs (a, b) that swapped places between two rungs beyond the held-out score's noise: a ranked above b
    before (lower score), and after it b is better than a by more than 2 paired standard errors over the same
    held-out records. `before`: each point's score at the earlier rung; `after`: its per-record scores now.

    >>> ranking_moved({"a": 1.0, "b": 1.1}, {"a": [1.2, 1.3, 1.25], "b": [1.0, 1.1, 1.04]})
    [('a', 'b')]
    >>> ranking_moved({"a": 1.0, "b": 1.1}, {"a": [1.2, 1.0, 1.25], "b": [1.0, 1.3, 1.04]})  # within noise
    []
    """
    moved = []
    ids = [i for i in before if i in after]
    for a in ids:
        for b in ids:
            if before[a] < before[b] and len(after[a]) == len(after[b]) >= 2:
                d = [y - x for x, y in zip(after[a], after[b])]  # b - a per record: negative where b is better
                mean = sum(d) / len(d)
                se = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d))
                if mean < -2 * se:
                    moved.append((a, b))
    return moved


def run_rung(sweep_dir: str, run_id: str, rung: int, steps: int, final: bool, heldout: Heldout) -> str:
    """One point's rung in a local worker: `rung_work`, then `record_outcome`. 'done' or 'failed'; never raises
    for a failing point (its error goes into the database)."""
    folder = Path(sweep_dir)
    row = next(r for r in db.runs(folder) if r["run_id"] == run_id)
    trained = row["status"] == "done"  # a point finished before a kill during its final scoring
    if not trained:
        db.mark_running(folder, run_id)
    out = run_dir(folder, run_id)
    try:
        point = Point.from_json(json.dumps(row["point"]))
        with output_to(out / "eval.log"):
            outcome = rung_work(point, out, trained, steps=steps, final=final, heldout=heldout)
    except Exception as e:  # noqa: BLE001 - recorded on the point, never propagated
        db.mark_failed(folder, run_id, str(e) if isinstance(e, PointError) else f"{type(e).__name__}: {e}")
        return "failed"
    record_outcome(folder, run_id, outcome, rung=rung, steps=steps)
    return "done"


def promote(scores: dict[str, float], points: dict[str, Point], eta: int, widen: bool = False) -> set[str]:
    """The run ids that continue: per (model, dataset), the ceil(n / eta) configurations with the lowest mean
    held-out NLL over their seeds (a NaN score ranks last; ties by the configuration's labels, for a stable rule).
    `widen` (the rank guard: the ranking moved beyond noise since the last rung): ceil(2 n / eta) continue."""
    brackets: dict[tuple, dict[tuple, list[str]]] = defaultdict(lambda: defaultdict(list))
    for rid in scores:
        lab = points[rid].labels
        # the variant (span, role, dynamic weights of `weight_axes`) is part of what a configuration is: two
        # variants at the same (lambda_p, lambda_r) are two configurations, never seeds of one
        config = (lab.prompt_weight, lab.response_weight, lab.normalization, lab.variant)
        brackets[(lab.model, lab.dataset)][config].append(rid)
    keep: set[str] = set()
    for configs in brackets.values():

        def mean(ids: list[str]) -> float:
            values = [scores[i] for i in ids]
            return math.inf if any(v is None or math.isnan(v) for v in values) else sum(values) / len(values)

        ranked = sorted(configs, key=lambda c: (mean(configs[c]), str(c)))
        for c in ranked[: math.ceil(len(ranked) * (2 if widen else 1) / eta)]:
            keep.update(configs[c])
    return keep


def _failures_only(report: Report, run_id: str, outcome: str) -> None:
    if outcome != "done":
        report(run_id, outcome)


def warmup_warning(steps: list[int], points: list[Point]) -> str | None:
    """A warning when the first rung ends inside the learning-rate warmup (None otherwise). The search is run as
    asked, but a ranking taken there measured the warmup more than the weights: on SmolLM2 (BENCHMARKS.md section
    9) the step-3 ranking, at the end of a 3-step warmup, was the reverse of the final one.

    >>> from witune.train import TrainConfig
    >>> pt = lambda: Point("p", TrainConfig(max_steps=27, warmup_ratio=0.1), None)  # 3 warmup steps
    >>> warmup_warning([3, 9, 27], [pt()]) is not None, warmup_warning([9, 27], [pt()])
    (True, None)
    """
    warmup = max((math.ceil(p.train.warmup_ratio * p.train.max_steps) for p in points), default=0)
    if not steps or steps[0] > warmup:
        return None
    return (
        f"halving's first rung ends at step {steps[0]}, inside the {warmup}-step warmup: the points are ranked "
        "before the weights have had much effect, and such a ranking can be the reverse of the final one; put "
        "the first rung well past the warmup (fewer halving_rungs, a smaller halving_eta or more max_steps)"
    )


def rising_score_warning(rungs: list[dict], names: dict[str, str] | None = None) -> str | None:
    """A warning when a point's held-out NLL rose from one of its rungs to the next (None otherwise): it got
    worse on held-out records after the earlier rung (overfitting), and the earlier rankings could not see that
    turn. On SmolLM2 at 81 steps (BENCHMARKS.md section 9) it is where halving's choice and the grid's parted.
    `names` maps a run_id to how the message names the point (its weights; a run_id alone is a hash).

    >>> r = lambda rid, k, steps, score: {"run_id": rid, "rung": k, "steps": steps, "score": score}
    >>> rising_score_warning([r("a", 0, 9, 1.93), r("a", 1, 27, 1.91), r("b", 0, 9, 1.95)]) is None
    True
    >>> rises = [r("a", 0, 9, 1.93), r("a", 1, 27, 1.91), r("a", 2, 81, 1.95)]
    >>> print(rising_score_warning(rises))  # doctest: +ELLIPSIS
    held-out response NLL rose between rungs for 1 point(s) (a: 1.9100 at step 27 -> 1.9500 at step 81): ...
    """
    by_run: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(rungs, key=lambda r: (r["run_id"], r["rung"])):
        by_run[r["run_id"]].append(r)
    rises = [  # a NaN score is stored as NULL: it neither rose nor fell
        (a, b)
        for rs in by_run.values()
        for a, b in zip(rs, rs[1:], strict=False)
        if None not in (a["score"], b["score"]) and b["score"] > a["score"]
    ]
    if not rises:
        return None
    a, b = rises[0]
    name = (names or {}).get(a["run_id"], a["run_id"])
    return (
        f"held-out response NLL rose between rungs for {len({a['run_id'] for a, _ in rises})} point(s) "
        f"({name}: {a['score']:.4f} at step {a['steps']} -> {b['score']:.4f} at step {b['steps']}): "
        "the points got worse on held-out records after the earlier rung, a turn the rankings taken before it "
        "could not see; check the choice with a grid over the finalists, or train for fewer steps"
    )


def _weights(point: Point) -> str:
    """A point's design in a message: its weights, seed and further axes (its run_id alone is a hash)."""
    lab = point.labels
    parts = [
        f"prompt {lab.prompt_weight:g}" if lab.prompt_weight is not None else "",
        f"response {lab.response_weight:g}" if lab.response_weight is not None else "",
        f"seed {lab.seed}" if lab.seed is not None else "",
        lab.variant,
    ]
    return ", ".join(p for p in parts if p)


def run_halving(cfg: SweepConfig, folder: Path, points: list[Point], report: Report) -> int:
    """Run the rungs over `points` (registered in the database); returns how many points stopped early.
    `report(run_id, outcome)` is called once per point that ends in this call: done, failed or stopped."""
    steps = cfg.rung_steps()
    curves = cfg.search == "grid"  # curve_every: every point is scored at every rung and trains to the end
    if not curves and (warning := warmup_warning(steps, points)) is not None:
        print(f"warning: {warning}", file=sys.stderr)
    heldout = Heldout(
        str(Path(cfg.halving_heldout or "").expanduser().resolve()), cfg.halving_heldout_limit, cfg.eval_batch_size
    )
    by_id = {p.run_id: p for p in points}
    status = {r["run_id"]: r["status"] for r in db.runs(folder)}
    ranked = {r["run_id"] for r in db.rungs(folder)}
    # A point finished by an earlier grid sweep has no rung scores to rank: it stays as it is, out of the search.
    alive = [rid for rid in by_id if rid in ranked or status.get(rid) != "done"]
    with backend_session(cfg):  # one Ray instance for every rung
        stopped = 0
        for k, s in enumerate(steps):
            final = k == len(steps) - 1
            recorded = {r["run_id"]: r for r in db.rungs(folder) if r["rung"] == k}
            todo = [rid for rid in alive if rid not in recorded]
            ended = report if final else partial(_failures_only, report)  # earlier rungs end only failed points
            _train_rung(cfg, folder, todo, ended, rung=k, steps=s, final=final, heldout=heldout)
            recorded = {r["run_id"]: r for r in db.rungs(folder) if r["rung"] == k}
            alive = [rid for rid in alive if rid in recorded]  # a failed point leaves the search (--resume retries it)
            if final:
                db.decide_rung(folder, k, {rid: "final" for rid in alive})
                names = {rid: f"{rid}, {_weights(p)}" for rid, p in by_id.items()}
                if not curves and (warning := rising_score_warning(db.rungs(folder), names)) is not None:
                    print(f"warning: {warning}", file=sys.stderr)
                break
            if curves:
                db.decide_rung(folder, k, {rid: "promoted" for rid in alive})
                continue
            moved = _moved_since(folder, recorded, k) if k > 0 else []
            if moved:
                a, b = moved[0]
                print(
                    f"warning: halving's rank guard: the ranking moved beyond noise between steps {steps[k - 1]} "
                    f"and {s} ({len(moved)} pair(s); {_weights(by_id[b])} overtook {_weights(by_id[a])}): "
                    f"promoting ceil(2n/{cfg.halving_eta}) instead of ceil(n/{cfg.halving_eta})",
                    file=sys.stderr,
                )
            scores = {rid: recorded[rid]["score"] for rid in alive}
            keep = promote(scores, by_id, cfg.halving_eta, widen=bool(moved))
            decisions = {rid: "promoted" if rid in keep else "stopped" for rid in alive}
            db.decide_rung(folder, k, decisions)
            for rid, d in decisions.items():
                if d == "stopped":
                    stopped += 1
                    if status.get(rid) != "stopped":
                        report(rid, "stopped")
            alive = [rid for rid in alive if rid in keep]
    return stopped


def _moved_since(folder: Path, recorded: dict[str, dict], rung: int) -> list[tuple[str, str]]:
    """The rank guard's pairs for the points of `rung` (scores of rung - 1 against per-record scores now)."""
    before = {r["run_id"]: r["score"] for r in db.rungs(folder) if r["rung"] == rung - 1 and r["run_id"] in recorded}
    after = {rid: items for rid in before if (items := rung_items(folder, rid, recorded[rid]["steps"])) is not None}
    return ranking_moved(before, after)


def _train_rung(
    cfg: SweepConfig,
    folder: Path,
    todo: list[str],
    ended: Report,
    *,
    rung: int,
    steps: int,
    final: bool,
    heldout: Heldout,
) -> None:
    """The points `todo` through one rung on the sweep's backend; every outcome goes into the database."""
    if cfg.backend == "ray":
        from witune.sweep.ray_backend import run_ray

        work = partial(rung_work, steps=steps, final=final, heldout=heldout)
        record = partial(record_outcome, rung=rung, steps=steps)
        run_ray(folder, todo, cfg.ray_address, ended, workers=cfg.workers, work=work, record=record)
    else:
        task = partial(run_rung, rung=rung, steps=steps, final=final, heldout=heldout)
        run_local(folder, todo, cfg.workers, ended, task)
