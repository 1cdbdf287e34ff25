"""Where the shared real data lives, and the CLI as a user meets it, for tests (importable from any test module: pytest puts tests/ on sys.path)."""

import json
from dataclasses import dataclass
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


def alpaca_file(path: Path, n: int) -> Path:
    """`n` small Alpaca records with distinct answers, as JSON lines (for the random tiny model what they say does
    not matter, only their shape)."""
    rows = [{"instruction": f"Add {i} and {i + 3}.", "input": "", "output": f"It is {2 * i + 3}."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
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


def refused(argv: list[str], capsys, *needles: str) -> str:
    """`witune ARGV` must fail with exactly one non-empty line on stderr, an error line holding every needle,
    never a traceback; returns stderr."""
    code, _, err = run_cli(argv, capsys)
    assert code != 0, f"accepted: {argv}"
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "error" in lines[0], f"not one error line: {err!r}"
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


@dataclass
class SweepPoint:
    """What `db.add_points` stores: a run id and the point's JSON (labels are what the analysis reads)."""

    run_id: str
    labels: dict

    def to_json(self) -> str:
        return json.dumps({"labels": self.labels})


def make_sweep_db(
    folder: Path, done: int = 4, pending: int = 0, running: int = 0, variant: str = "", score=None
) -> Path:
    """A sweep folder whose database holds `done` finished points (PLW 0, 0.1, ... on one dataset, arc_easy
    acc `score(i)`), then `pending` and `running` ones, as `witune sweep` leaves them."""
    from witune.results_schema import ResultRow
    from witune.sweep import db

    score = score or (lambda i: 0.5 + 0.01 * i)
    labels = dict(model="m", dataset="d", response_weight=1.0, seed=0, variant=variant)
    points = [
        SweepPoint(f"r{i}{variant}", {**labels, "prompt_weight": 0.1 * i}) for i in range(done + pending + running)
    ]
    db.add_points(folder, points)
    for i, p in enumerate(points[:done]):
        db.mark_running(folder, p.run_id)
        db.finish_run(folder, p.run_id, [ResultRow("arc_easy", "acc", score(i), 0.01)], [(1, 2.0)])
    for p in points[done + pending :]:
        db.mark_running(folder, p.run_id)
    return folder
