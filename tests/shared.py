"""Where the shared real data lives, for tests (importable from any test module: pytest puts tests/ on sys.path)."""

from pathlib import Path

import pytest

from witune.shared_data import find_shared_data, shared_data_candidates

# witune's own lookup; when nothing is found, the first candidate names the folder in skip messages.
SHARED_DATA = find_shared_data() or shared_data_candidates()[0].resolve()


def shared_file(name: str, folder: str = "train") -> Path:
    """A real file from the shared data folder; the test is skipped, with the reason, when it is absent."""
    path = SHARED_DATA / folder / name
    if not path.is_file():
        pytest.skip(
            f"shared data file {path} is absent (tests use the real files in ../shared/data; "
            "set WITUNE_SHARED_DATA to point elsewhere)"
        )
    return path
