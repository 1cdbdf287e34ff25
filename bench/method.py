"""The shared method of every benchmark: interleaved repeats, load average around each run, min/median/max,
results written atomically as JSON.

A figure is only as good as the machine it ran on. On a shared machine other processes steal cores, so each
run records `os.getloadavg()` before and after itself, and a run whose 1-minute load average exceeded
`LOADED_ABOVE` at either end is marked `loaded` (tables show a `*` and the load range). Repeats interleave
the variants (A B C A B C ...), so load that comes and goes falls on all of them alike.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from witune.atomic import atomic_write_text

# 1-minute load average above which a run counts as taken under load. The benchmark itself keeps every core
# busy (torch uses one thread per core), so on an idle machine its own runs hold the load near the core count
# (1.3-1.7 measured on the idle 2-core machine); half a core more than that means something else ran.
LOADED_ABOVE = (os.cpu_count() or 1) + 0.5


def load1() -> float:
    return os.getloadavg()[0]


def timed_run(fn: Callable[[], dict]) -> dict:
    """Call fn (which returns a dict of measurements) and add the load average before and after it."""
    before = os.getloadavg()
    out = fn()
    after = os.getloadavg()
    return {
        **out,
        "load_before": list(before),
        "load_after": list(after),
        "loaded": max(before[0], after[0]) > LOADED_ABOVE,
    }


def interleaved(variants: dict[str, Callable[[], dict]], repeats: int, log: bool = True) -> dict[str, list[dict]]:
    """repeats x (every variant once, in order); returns variant -> list of run dicts (with load averages)."""
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for r in range(repeats):
        for name, fn in variants.items():
            runs[name].append(timed_run(fn))
            if log:
                last = runs[name][-1]
                shown = {
                    k: (round(v, 3) if isinstance(v, float) else v)
                    for k, v in last.items()
                    if not isinstance(v, (list, dict))
                }
                print(f"repeat {r + 1}/{repeats} {name}: {shown}", flush=True)
    return runs


def in_subprocess(args: list[str]) -> dict:
    """Run `python args...` in a fresh process (its own peak memory, no warm caches); its last stdout line is JSON."""
    res = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"benchmark case {args} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> dict:
    """min / median / max of a list of numbers."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def load_summary(runs: list[dict]) -> dict:
    """Load range over runs and whether any of them ran under load."""
    loads = [x for r in runs for x in (r["load_before"][0], r["load_after"][0])]
    return {"load_min": min(loads), "load_max": max(loads), "loaded": any(r["loaded"] for r in runs)}


def load_cell(row: dict) -> str:
    """Table cell: the 1-minute load range of a row's runs, starred when any run was under load."""
    return f"{row['load_min']:.1f}-{row['load_max']:.1f}" + (" *" if row["loaded"] else "")


def fmt_spread(s: dict, digits: int = 2) -> str:
    return f"{s['min']:.{digits}f} / {s['median']:.{digits}f} / {s['max']:.{digits}f}"


def machine() -> dict:
    import torch

    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loaded_above": LOADED_ABOVE,
    }


def write_results(out: str | Path, meta: dict, rows: list[dict]) -> None:
    """JSON {meta, rows} to `out`, via a temporary name and a rename (a killed run leaves no half file)."""
    meta = {
        **machine(),
        **meta,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "any_loaded": any(r.get("loaded") for r in rows),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(
        f"wrote {out}"
        + (
            f"   (* = taken under load: 1-min load average above {LOADED_ABOVE}; re-run on an idle machine)"
            if meta["any_loaded"]
            else ""
        )
    )
