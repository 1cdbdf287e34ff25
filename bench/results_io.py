"""Writing a benchmark's results: one JSON file with the run's settings (meta) and its rows."""

import json
import time
from pathlib import Path


def write_results(out: str | Path, meta: dict, rows: list[dict]) -> None:
    meta = {**meta, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    # A killed benchmark leaves the previous results, never half a file.
    from witune.atomic import atomic_write_text

    atomic_write_text(out, json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out}")
