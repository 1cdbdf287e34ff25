"""The calibration tables of docs/statistics.md: planted-truth simulations of the analysis, many replicates.

One command:  python bench/simulate_statistics.py            (about 10 minutes on 2 cores; --quick: a tenth)

* noise guard: false winners on pure-noise PLW grids (200 per cell) and power for a gain of 3 SE on every
  benchmark (100 per cell), K = 4, 9, 16, 36 configurations, 2 and 3 seeds;
* GAM flat test: family-wise rate of false effects on no-effect sweeps (200 with the Python engine, 60 with R
  when Rscript with mgcv is installed).

The test suite runs the same simulations with few replicates and binomial bounds (tests/test_noise_guard.py,
tests/test_analysis_gam.py); this script prints the tables and writes bench/results/statistics.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from method import write_results  # noqa: E402

from witune.analysis import python_engine, r_engine  # noqa: E402
from witune.analysis.calibration import family_wise_hits, guard_rates  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the replicates (a smoke run)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "statistics.json"))
    args = ap.parse_args()
    scale = 0.1 if args.quick else 1.0
    rows = []
    null_reps, power_reps = int(200 * scale), int(100 * scale)
    for seeds in (2, 3):
        for k in (4, 9, 16, 36):
            false, _ = guard_rates(k, seeds, null_reps)
            _, power = guard_rates(k, seeds, power_reps, effect=3.0, everywhere=True)
            rows.append(
                dict(table="noise guard", seeds=seeds, k=k, reps=null_reps, false_winners=false, power_3se=power)
            )
            print(
                f"noise guard  seeds {seeds} K {k:2d}: false winners {false:.3f} ({null_reps} grids), "
                f"power at 3 SE on every benchmark {power:.2f} ({power_reps} grids)",
                flush=True,
            )
    engines = [("python", python_engine.fit_gam, int(200 * scale), 1000)]
    if r_engine.r_status()[0]:
        engines.append(("r", r_engine.fit_gam, int(60 * scale), 2000))
    else:
        print(f"R GAM skipped: {r_engine.r_status()[1]}")
    for name, fit, reps, first in engines:
        hits = family_wise_hits(fit, reps, first_seed=first)
        rows.append(dict(table="GAM family-wise", engine=name, reps=reps, hits=hits, rate=hits / reps))
        print(f"GAM flat test [{name}]: family-wise false effects {hits}/{reps} = {hits / reps:.1%}", flush=True)
    write_results(
        args.out, {"command": "python bench/simulate_statistics.py" + (" --quick" if args.quick else "")}, rows
    )


if __name__ == "__main__":
    main()
