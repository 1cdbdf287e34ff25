"""lm-evaluation-harness on witune's local task YAMLs, offline, with the tiny random model."""

from __future__ import annotations

import json

import pytest
import torch

from witune.eval.local_tasks import default_data_dir, write_local_tasks

DATA = default_data_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="shared evaluation data (../shared/data/eval) not present")
lm_eval = pytest.importorskip("lm_eval", reason="lm-eval not installed (pip install witune[eval])")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from witune.models.tiny import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    # The local tasks must never need the hub: make any attempt fail instead of downloading.
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@needs_data
def test_local_task_yamls_cover_every_benchmark_and_preset(tmp_path):
    names = write_local_tasks(tmp_path, DATA)
    for n in (
        "witune_arc_challenge",
        "witune_piqa",
        "witune_winogrande",
        "witune_truthfulqa_mc2",
        "witune_mmlu",
        "witune_mmlu_anatomy",
        "witune_bbh",
        "witune_bbh_navigate",
        "witune_ifeval",
    ):
        assert n in names
    assert len([n for n in names if n.startswith("witune_mmlu_")]) == 57
    import yaml

    def shots(name):
        return yaml.load((tmp_path / f"{name}.yaml").read_text(), Loader=yaml.BaseLoader)["num_fewshot"]

    # PLW paper Table 2 presets (ARC 25, PIQA 0, TruthfulQA-MC2 0 + built-in primer, WinoGrande 5); MMLU 5.
    assert [
        shots(n)
        for n in (
            "witune_arc_challenge",
            "witune_piqa",
            "witune_truthfulqa_mc2",
            "witune_winogrande",
            "witune_mmlu_anatomy",
        )
    ] == ["25", "0", "0", "5", "5"]
    # PIQA labels were joined from valid-labels.lst, in order.
    piqa = [json.loads(line) for line in (tmp_path / "piqa_valid.jsonl").read_text().splitlines()]
    labels = (DATA / "piqa" / "valid-labels.lst").read_text().split()
    assert len(piqa) == 1838 and [str(r["label"]) for r in piqa] == labels


def _loglik(model, tok, context: str, continuation: str) -> float:
    """Sum of log p(continuation tokens | context), tokenising like the harness (whole string, then split)."""
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
    return float(sum(logp[i - 1, whole[i]] for i in range(len(ctx), len(whole))))


@needs_data
def test_harness_piqa_accuracy_matches_independent_loglikelihoods(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from witune.eval.harness import run_harness

    n = 6
    rows = run_harness(tiny_dir, ["witune_piqa", "witune_arc_challenge"], limit=n, num_fewshot=0, batch_size=2)
    got = {(r["task"], r["metric"]): r for r in rows}
    assert set(got) >= {("witune_piqa", "acc"), ("witune_piqa", "acc_norm"), ("witune_arc_challenge", "acc")}
    assert all(0.0 <= r["value"] <= 1.0 and r["higher_is_better"] for r in rows)

    # acc = mean over items of [argmax_choice sum loglik(" " + choice | "Question: goal\nAnswer:") == label]
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    docs = [json.loads(x) for x in (DATA / "piqa" / "valid.jsonl").read_text().splitlines()[:n]]
    labels = [int(x) for x in (DATA / "piqa" / "valid-labels.lst").read_text().split()[:n]]
    hits = []
    for doc, label in zip(docs, labels):
        ctx = f"Question: {doc['goal']}\nAnswer:"
        scores = [_loglik(model, tok, ctx, " " + doc[k]) for k in ("sol1", "sol2")]
        hits.append(int(max(range(2), key=scores.__getitem__) == label))
    assert got[("witune_piqa", "acc")]["value"] == pytest.approx(sum(hits) / n)


@needs_data
def test_harness_truthfulqa_mc2_and_winogrande_run_offline(tiny_dir):
    from witune.eval.harness import run_harness

    rows = run_harness(tiny_dir, ["witune_truthfulqa_mc2", "witune_winogrande"], limit=3, num_fewshot=0)
    by = {(r["task"], r["metric"]): r["value"] for r in rows}
    # MC2 is a probability mass in (0, 1); a random model puts some mass on true and false answers alike.
    assert 0.0 < by[("witune_truthfulqa_mc2", "acc")] < 1.0
    assert by[("witune_winogrande", "acc")] in (0.0, 1 / 3, 2 / 3, 1.0)


def test_unknown_local_task_is_a_clear_error(tiny_dir):
    from witune.eval.harness import run_harness

    if DATA is None:
        pytest.skip("shared evaluation data not present")
    with pytest.raises(ValueError, match="witune_nope"):
        run_harness(tiny_dir, ["witune_nope"], limit=1)
