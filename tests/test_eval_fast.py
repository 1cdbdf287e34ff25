"""witune's lm-eval model (`WituneLM`) against lm-eval's stock `HFLM`, both run for real on the tiny model:
the same log-likelihoods, the same is_greedy, the same task scores, for less model work."""

from __future__ import annotations

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval not installed (pip install witune[eval])")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from witune.eval.fast_lm import WituneLM  # noqa: E402
from witune.eval.local_tasks import default_data_dir  # noqa: E402

DATA = default_data_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="shared evaluation data (../shared/data/eval) not present")


@pytest.fixture
def tiny_dir(tiny_model_dir) -> str:
    return str(tiny_model_dir)  # the session's tiny model (conftest), as the path string HFLM takes


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _pair(tiny_dir, batch_size, **kw):
    common = dict(pretrained=tiny_dir, device="cpu", batch_size=batch_size, dtype="float32", **kw)
    return HFLM(**common), WituneLM(**common)


def _requests(stock: HFLM) -> list[Instance]:
    """Multiple-choice items (choices sharing their context, choices sharing their first tokens, a repeated
    choice, one-token choices), a lone request, a context longer than max_length and the model's own greedy
    continuation (is_greedy True)."""
    long_ctx = "Once upon a time " * 30
    shots = "Question: what is the capital of France?\nAnswer: Paris\n\n"  # few-shot-like shared context
    items = [
        (shots + "Question: which colour is the sky?\nAnswer:", [" blue", " green and red", " blue", " grey"]),
        (shots + "Question: how do you open a jar?\nAnswer:", [" twist the lid to the left", " twist the lid off"]),
        (shots + "The answer is", [" A", " B", " C", " D"]),
        ("Lonely context", [" with one continuation"]),
        (long_ctx, [" the end", " and they lived on"]),
    ]
    greedy_ctx = "Question: what is two plus two?\nAnswer:"
    ids = torch.tensor([stock.tok_encode(greedy_ctx)])
    with torch.no_grad():
        out = stock.model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    items.append((greedy_ctx, [stock.tok_decode(out[0, ids.shape[1] :].tolist(), skip_special_tokens=False)]))
    return [Instance("loglikelihood", {}, (ctx, cont), i) for i, (ctx, conts) in enumerate(items) for cont in conts]


class TokenCounter:
    """Tokens the model's body is run on (embedding lookups), padding included."""

    def __init__(self, lm):
        self.n = 0
        lm.model.get_input_embeddings().register_forward_hook(self)

    def __call__(self, module, args, output):
        self.n += args[0].numel()


@pytest.mark.parametrize("batch_size", [1, 3])
def test_loglikelihoods_equal_stock_hflm_for_less_work(tiny_dir, batch_size):
    stock, fast = _pair(tiny_dir, batch_size, max_length=128)
    reqs = _requests(stock)
    # the long context, and only it, is truncated
    assert [len(stock.tok_encode(r.args[0] + r.args[1])) > 129 for r in reqs].count(True) == 2
    want = stock.loglikelihood(reqs, disable_tqdm=True)
    got = fast.loglikelihood(reqs, disable_tqdm=True)
    assert [g for _, g in got] == [g for _, g in want]
    assert any(g for _, g in want)  # the greedy continuation
    for (a, _), (b, _) in zip(got, want):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-5)
    assert fast._prefix_ok and fast._mask_keep  # the fast paths ran, not a fallback
    # Less model work where the choices share their context (the truncated item shares nothing).
    untruncated = [r for r in reqs if r.args[0] != reqs[-3].args[0]]
    counted = TokenCounter(stock), TokenCounter(fast)
    stock.loglikelihood(untruncated, disable_tqdm=True)
    fast.loglikelihood(untruncated, disable_tqdm=True)
    assert counted[1].n < 0.6 * counted[0].n, (counted[1].n, counted[0].n)


def test_questions_sharing_a_few_shot_block_run_it_once(tiny_dir):
    """MMLU's shape: every question of a subject starts with the same few-shot block and has one-token
    choices. Stock HFLM runs each question once (its one-token cache); witune's prefix tree runs the block once
    per batch, across questions, with the same log-likelihoods."""
    stock, fast = _pair(tiny_dir, 8, max_length=256)
    shots = "".join(f"Question: what is {a} plus {a}?\nAnswer: {2 * a}\n\n" for a in range(1, 6))
    questions = [f"Question: what colour is thing {i}?\nAnswer:" for i in range(6)]
    reqs = [
        Instance("loglikelihood", {}, (shots + q, c), i)
        for i, q in enumerate(questions)
        for c in (" A", " B", " C", " D")
    ]
    counted = TokenCounter(stock), TokenCounter(fast)
    want, got = stock.loglikelihood(reqs, disable_tqdm=True), fast.loglikelihood(reqs, disable_tqdm=True)
    assert [g for _, g in got] == [g for _, g in want]
    assert [a for a, _ in got] == pytest.approx([b for b, _ in want], rel=1e-5, abs=1e-5)
    block, question = (
        len(stock.tok_encode(shots)),
        len(stock.tok_encode(shots + questions[0])) - len(stock.tok_encode(shots)),
    )
    assert counted[0].n >= 6 * block  # stock: the block once per question
    assert counted[1].n <= block + 6 * (question + 2), (counted[1].n, block, question)  # witune: once in all


def test_eager_attention_and_sharing_off_equal_stock(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    stock = HFLM(pretrained=model, tokenizer=tok, batch_size=2, max_length=128)
    reqs = _requests(stock)
    want = stock.loglikelihood(reqs, disable_tqdm=True)
    shared = WituneLM(pretrained=model, tokenizer=tok, batch_size=2, max_length=128)
    for fast in (
        shared,
        WituneLM(pretrained=model, tokenizer=tok, batch_size=2, max_length=128, share_prefix="False"),
    ):
        got = fast.loglikelihood(reqs, disable_tqdm=True)
        assert [g for _, g in got] == [g for _, g in want]
        assert [a for a, _ in got] == pytest.approx([b for b, _ in want], rel=1e-5, abs=1e-5)
    assert shared._prefix_ok  # the packed path with an additive (eager) mask ran
    assert fast.share_prefix is False and fast._prefix_ok is None  # never probed: nothing was shared


def test_rolling_loglikelihood_equals_stock(tiny_dir):
    stock, fast = _pair(tiny_dir, 2, max_length=16)
    reqs = [Instance("loglikelihood_rolling", {}, (text,), i) for i, text in enumerate(["a b c " * 20, "short one"])]
    assert fast.loglikelihood_rolling(reqs, disable_tqdm=True) == pytest.approx(
        stock.loglikelihood_rolling(reqs, disable_tqdm=True), rel=1e-5
    )


@needs_data
@pytest.mark.parametrize("batch_size", [1, 4])
def test_task_scores_equal_stock_hflm(tiny_dir, batch_size):
    from witune.eval.harness import run_harness

    tasks = ["witune_piqa", "witune_arc_challenge", "witune_winogrande", "witune_truthfulqa_mc2"]
    # 2 shots: ARC and WinoGrande prompts carry few-shot context, TruthfulQA its 6-shot primer
    scores = {
        lm: {
            (r["task"], r["metric"]): r["value"]
            for r in run_harness(tiny_dir, tasks, limit=4, num_fewshot=2, batch_size=batch_size, lm=lm)
        }
        for lm in ("hf", "witune")
    }
    assert set(scores["witune"]) == set(scores["hf"]) and len(scores["hf"]) >= 6
    for key, value in scores["hf"].items():
        if key == ("witune_truthfulqa_mc2", "acc"):  # a probability mass: float-equal, not 0/1 counts
            assert scores["witune"][key] == pytest.approx(value, abs=1e-6)
        else:
            assert scores["witune"][key] == value, key


def test_default_lm_is_witune_and_stock_hflm_stays_selectable(tiny_dir, monkeypatch):
    from lm_eval.api.registry import get_model

    from witune.eval.harness import make_lm

    assert get_model("witune") is WituneLM
    monkeypatch.delenv("WITUNE_EVAL_LM", raising=False)
    assert type(make_lm(tiny_dir)) is WituneLM
    assert type(make_lm(tiny_dir, lm="hf")) is HFLM
    monkeypatch.setenv("WITUNE_EVAL_LM", "hf")
    assert type(make_lm(tiny_dir)) is HFLM
    assert type(make_lm(tiny_dir, lm="witune")) is WituneLM
    monkeypatch.setenv("WITUNE_EVAL_LM", "fast")
    with pytest.raises(ValueError, match="WITUNE_EVAL_LM='fast'"):
        make_lm(tiny_dir)


@pytest.mark.slow
@needs_data
def test_smollm2_piqa_loglikelihoods_equal_stock_hflm():
    import json

    from witune.models import smollm2_path

    stock, fast = _pair(str(smollm2_path()), 8)
    docs = [json.loads(x) for x in (DATA / "piqa" / "valid.jsonl").read_text().splitlines()[:8]]
    reqs = [
        Instance("loglikelihood", {}, (f"Question: {d['goal']}\nAnswer:", " " + d[k]), i)
        for i, d in enumerate(docs)
        for k in ("sol1", "sol2")
    ]
    want, got = stock.loglikelihood(reqs, disable_tqdm=True), fast.loglikelihood(reqs, disable_tqdm=True)
    assert [g for _, g in got] == [g for _, g in want]
    assert [a for a, _ in got] == pytest.approx([b for b, _ in want], rel=1e-5)
