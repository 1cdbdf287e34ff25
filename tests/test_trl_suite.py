"""TRL's own SFTTrainer unit tests, run with `trl.SFTTrainer` replaced by `WeightedSFTTrainer`: every test that
passes with stock TRL must pass with it.

Needs a TRL source checkout matching the installed TRL (its tests/ folder is not in the wheel): set
WITUNE_TRL_CHECKOUT to it. The tests that need the hub (datasets, most models) fail offline in both runs and
are left out of the comparison by construction; the model id the offline tests name,
trl-internal-testing/tiny-Qwen2ForCausalLM-2.5, is served by a local folder (witune's tiny random Llama).
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

CHECKOUT = os.environ.get("WITUNE_TRL_CHECKOUT", "")
TEST_FILE = Path(CHECKOUT) / "tests" / "test_sft_trainer.py"
HUB_MODEL = "trl-internal-testing/tiny-Qwen2ForCausalLM-2.5"


def _run(workdir: Path, substitute: bool) -> dict[str, str]:
    """{test id: passed | failed | skipped} of one pytest run over TRL's test file, in `workdir`."""
    report = workdir / f"report-{int(substitute)}.xml"
    here = Path(__file__).parent
    env = {
        **os.environ,
        "WITUNE_TRL_SUBSTITUTE": "1" if substitute else "0",
        "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    cmd = [sys.executable, "-m", "pytest", str(TEST_FILE), "-p", "trl_suite_plugin", "-p", "no:cacheprovider"]
    cmd += ["-q", "--rootdir", CHECKOUT, f"--junitxml={report}", "-o", "addopts="]
    subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=3000, check=False)
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = outcome
    return outcomes


@pytest.mark.slow
@pytest.mark.skipif(
    not TEST_FILE.is_file(),
    reason="set WITUNE_TRL_CHECKOUT to a TRL source checkout of the installed version (with tests/test_sft_trainer.py)",
)
def test_trl_own_sft_tests_pass_with_weighted_sft_trainer(tmp_path):
    from witune.models import make_tiny_model

    make_tiny_model(tmp_path / HUB_MODEL)
    stock, ours = _run(tmp_path, False), _run(tmp_path, True)
    passed = sorted(t for t, o in stock.items() if o == "passed")
    assert passed, "no TRL test passed with stock TRL: the checkout or the environment is wrong"
    lost = [t for t in passed if ours.get(t) != "passed"]
    print(
        f"TRL's SFTTrainer tests: {len(passed)} pass with stock TRL, {len(passed) - len(lost)} with WeightedSFTTrainer"
    )
    assert not lost, f"pass with stock TRL but not with WeightedSFTTrainer: {lost}"
