"""Where the shared real data lives, and the CLI as a user meets it, for tests (importable from any test module: pytest puts tests/ on sys.path)."""

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


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """`witune ARGV` in-process: (exit code, stdout, stderr). An exception escaping main is a traceback."""
    from witune.cli.main import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        code = e.code
    except Exception as e:  # noqa: BLE001 (what a user would see as a traceback)
        pytest.fail(f"traceback instead of an error line: {type(e).__name__}: {e}")
    out, err = capsys.readouterr()
    return code, out, err
