"""Where the shared real data lives (training files, evaluation files): one lookup for the library and tests.

`$WITUNE_SHARED_DATA` if set, else ``../shared/data`` from the working directory, else ``../shared/data`` next to
the repository checkout (so commands run from inside the repository find it without configuration).
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA_ENV = "WITUNE_SHARED_DATA"


def shared_data_candidates() -> list[Path]:
    """The folders tried, in order (the environment variable first, when set)."""
    env = os.environ.get(SHARED_DATA_ENV)
    out = [Path(env)] if env else []
    out += [Path.cwd().parent / "shared" / "data", Path(__file__).resolve().parents[2].parent / "shared" / "data"]
    return out


def find_shared_data(subfolder: str | None = None) -> Path | None:
    """The first candidate folder (or its ``subfolder``) that exists, resolved; None when there is none."""
    for c in shared_data_candidates():
        path = c / subfolder if subfolder else c
        if path.is_dir():
            return path.resolve()
    return None
