"""Replay `witune tune`'s search strategies from a grid's stored learning curves, without training again.

A grid run with `curve_every` (`witune tune --search grid --curve-every N`) keeps every point's held-out
response NLL per record at every N-th step (`runs/<run_id>/heldout_step<N>.json`, and the pooled score in
sweep.db's `rungs` table). Training is deterministic and a rung resumes bit for bit, so a strategy that would
have stopped a point at step s would have seen exactly the stored step-s scores: each strategy's choice and
training tokens can be computed from the curves. `bench/bench_tune_replay.py` confirms it with one live run
per strategy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from witune.analysis import paired, surface
from witune.errors import ConfigError


@dataclass
class Curves:
    """A grid's stored curves: per PLW, {step: per-record scores}, {step: pooled score}, tokens per step."""

    steps: list[int]
    items: dict[float, dict[int, list[float]]]
    pooled: dict[float, dict[int, float]]
    tokens: dict[float, list[float]]  # cumulative training tokens after each step 1..max
    run_ids: dict[float, str]
    points: dict[float, object] = field(repr=False, default_factory=dict)  # sweep Points, for halving's rule

    def tokens_at(self, plw: float, step: int) -> float:
        return self.tokens[plw][step - 1]


def read_curves(folder: str | Path) -> Curves:
    """The curves of a grid tune folder (or any sweep run with curve_every)."""
    import json

    from witune.sweep import db
    from witune.sweep.halving import rung_items
    from witune.sweep.point import Point
    from witune.sweep.runner import run_dir

    folder = Path(folder)
    by_run: dict[str, dict[int, float]] = {}
    for r in db.rungs(folder):
        by_run.setdefault(r["run_id"], {})[int(r["steps"])] = float(r["score"])
    if not by_run:
        raise ConfigError(f"{folder}: no stored learning curves (run the grid with curve_every)")
    curves = Curves(sorted({s for v in by_run.values() for s in v}), {}, {}, {}, {})
    for row in db.runs(folder):
        rid = row["run_id"]
        point = Point.from_json(json.dumps(row["point"]))
        if rid not in by_run or row["status"] != "done" or point.labels.prompt_weight is None:
            continue
        plw = float(point.labels.prompt_weight)
        curves.run_ids[plw], curves.points[plw], curves.pooled[plw] = rid, point, by_run[rid]
        curves.items[plw] = {s: list(rung_items(folder, rid, s) or []) for s in by_run[rid]}
        metrics = [json.loads(x) for x in (run_dir(folder, rid) / "metrics.jsonl").read_text().splitlines() if x]
        total, cumulative = 0.0, []
        for m in sorted(metrics, key=lambda m: int(m["step"])):
            total += float(m.get("tokens", 0.0))
            cumulative.append(total)
        curves.tokens[plw] = cumulative
    return curves


@dataclass
class Replayed:
    """One strategy's choice on the stored curves and what it cost."""

    strategy: str
    plw: float
    tokens: float
    share: float  # of the full grid's tokens
    runs: float  # full runs' worth of training
    stop: str
    against_grid: str = ""  # the chosen level's final score against the grid's choice, paired


def replay_grid(c: Curves) -> Replayed:
    last = c.steps[-1]
    best = min(c.items, key=lambda p: _mean(c.items[p][last]))
    total = sum(c.tokens_at(p, last) for p in c.items)
    return Replayed("grid", best, total, 1.0, float(len(c.items)), "every level")


def replay_surface(c: Curves, prior: float, budget_runs: int) -> Replayed:
    last = c.steps[-1]
    levels = sorted(c.items)

    def evaluate(plw: float) -> surface.Run:
        return surface.Run(plw, tuple(c.items[plw][last]))

    runs, d = surface.search(evaluate, levels, prior, budget_runs)
    tokens = sum(c.tokens_at(r.plw, last) for r in runs)
    return Replayed("surface", float(d.answer or 0.0), tokens, math.nan, float(len(runs)), str(d.stop))


def replay_halving(c: Curves, rung_steps: list[int], eta: int) -> Replayed:
    """`witune.sweep.halving`'s rule on the stored scores: promote on the pooled score, the rank guard on the
    per-record scores."""
    from witune.sweep.halving import promote, ranking_moved

    missing = [s for s in rung_steps if s not in c.steps]
    if missing:
        raise ConfigError(f"rung steps {missing} are not on the stored curves (steps {c.steps})")
    by_id = {c.run_ids[p]: c.points[p] for p in c.items}
    plw_of = {c.run_ids[p]: p for p in c.items}
    alive = list(by_id)
    reached = dict.fromkeys(alive, rung_steps[0])
    for k, s in enumerate(rung_steps[:-1]):
        scores = {rid: c.pooled[plw_of[rid]][s] for rid in alive}
        moved = []
        if k > 0:
            before = {rid: c.pooled[plw_of[rid]][rung_steps[k - 1]] for rid in alive}
            moved = ranking_moved(before, {rid: c.items[plw_of[rid]][s] for rid in alive})
        alive = [rid for rid in alive if rid in promote(scores, by_id, eta, widen=bool(moved))]  # type: ignore[arg-type]
        for rid in alive:
            reached[rid] = rung_steps[k + 1]
    last = rung_steps[-1]
    best = min(alive, key=lambda rid: _mean(c.items[plw_of[rid]][last]))  # as `witune tune` picks among finishers
    tokens = sum(c.tokens_at(plw_of[rid], s) for rid, s in reached.items())
    runs = sum(s for s in reached.values()) / last
    return Replayed("halving", plw_of[best], tokens, math.nan, runs, f"rungs {rung_steps}, eta {eta}")


def compare_to_grid(c: Curves, choices: list[Replayed]) -> list[Replayed]:
    """Each choice's share of the grid's tokens and its final score against the grid's choice (paired over the
    held-out records; a choice between levels is read at its nearest level)."""
    grid = replay_grid(c)
    last = c.steps[-1]
    levels = sorted(c.items)
    for r in choices:
        r.share = r.tokens / grid.tokens
        level = surface.grid_level(r.plw, levels)
        if level == grid.plw:
            r.against_grid = "the grid's choice"
            continue
        cmp = paired.compare(c.items[grid.plw][last], c.items[level][last], better_if_lower=True)
        if cmp is not None:
            r.against_grid = (
                f"PLW {level:g} against the grid's {grid.plw:g}: {cmp.diff:+.4f} ± {cmp.se:.4f} "
                f"({'within noise' if cmp.verdict == 'within noise' else 'not within noise'})"
            )
    return [grid, *choices]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.inf
