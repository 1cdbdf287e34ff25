"""Writing a benchmark's results: one JSON file with the run's settings (meta) and its rows."""

import json
import time
from pathlib import Path


def write_results(out: str | Path, meta: dict, rows: list[dict]) -> None:
    meta = {**meta, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out}")
