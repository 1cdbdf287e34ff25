"""Where the shared real data lives, for tests (importable from any test module: pytest puts tests/ on sys.path)."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("WITUNE_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data").resolve()


def shared_file(name: str, folder: str = "train") -> Path:
    """A real file from the shared data folder; the test is skipped, with the reason, when it is absent."""
    path = SHARED_DATA / folder / name
    if not path.is_file():
        pytest.skip(f"shared data file {path} is absent (tests use the real files in ../shared/data; "
                    "set WITUNE_SHARED_DATA to point elsewhere)")
    return path
