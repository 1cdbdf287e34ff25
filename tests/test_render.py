"""Rendering: exact prompt/response boundaries and weights, templates, truncation, collation and packing."""

import pytest
import torch

from witune.data import (
    ConfigError,
    DataError,
    Example,
    Location,
    Message,
    RoleWeights,
    alpaca_prompt,
    pack,
    packed_collate,
    pad_collate,
    render,
    tokenize_examples,
)
from witune.loss import IGNORE_INDEX, weighted_nll

LOC = Location("mem.jsonl", 1, "line")


def alpaca(instruction="Add the numbers.", inp="2 3", output="The sum is 5.", loc=LOC):
    fields = {"instruction": instruction, "input": inp, "output": output}
    user = f"{instruction}\n\n{inp}" if inp else instruction
    return Example((Message("user", user), Message("assistant", output)), "alpaca", loc, fields)


def chat(*turns, loc=LOC):
    roles = ["system"] if len(turns) % 2 else []
    roles += ["user", "assistant"] * (len(turns) // 2)
    return Example(tuple(Message(r, t) for r, t in zip(roles, turns)), "messages", loc)


def response_text(tok, row):
    return tok.decode([t for t, r in zip(row.input_ids, row.response) if r])


def test_alpaca_template_exact_text_and_weights(tiny_tokenizer):
    tok = tiny_tokenizer
    for inp in ("2 3", ""):
        ex = alpaca(inp=inp)
        row = render(ex, tok, RoleWeights(0.25, 1.0))
        assert tok.decode(row.input_ids) == alpaca_prompt("Add the numbers.", inp) + "The sum is 5." + tok.eos_token
        assert response_text(tok, row) == "The sum is 5." + tok.eos_token
        n_resp = sum(row.response)
        assert row.weights[0] == 0.0
        assert row.weights[-n_resp:] == [1.0] * n_resp
        assert set(row.weights[1:-n_resp]) == {0.25}
        assert row.response == [False] * (len(row) - n_resp) + [True] * n_resp


def test_chat_template_boundaries_roles_and_final_turn_only(tiny_tokenizer):
    tok = tiny_tokenizer
    ex = chat("Be brief.", "Who are you?", "A small model.", "And your name?", "Tiny.")
    row = render(ex, tok, RoleWeights(0.1, 1.0))
    assert tok.decode(row.input_ids) == tok.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in ex.messages], tokenize=False
    )
    assert response_text(tok, row) == "A small model.<|im_end|>Tiny.<|im_end|>"
    assert {r for r, resp in zip(row.roles, row.response) if resp} == {"assistant"}
    assert {w for w, resp in zip(row.weights, row.response) if resp} == {1.0}
    assert {w for w, resp in zip(row.weights[1:], row.response[1:]) if not resp} == {0.1}

    last = render(ex, tok, RoleWeights(0.1, 1.0), final_turn_only=True)
    assert last.input_ids == row.input_ids
    assert response_text(tok, last) == "Tiny.<|im_end|>"

    no_system = render(ex, tok, RoleWeights(0.1, 1.0, {"system": 0.0}))
    assert {w for w, r in zip(no_system.weights, no_system.roles) if r == "system"} == {0.0}
    assert {w for w, r in zip(no_system.weights[1:], no_system.roles[1:]) if r == "user"} == {0.1}


def test_plain_template_and_prompt_completion(tiny_tokenizer):
    tok = tiny_tokenizer
    ex = Example(
        (Message("user", "2+2="), Message("assistant", " 4")),
        "prompt_completion",
        LOC,
        {"prompt": "2+2=", "completion": " 4"},
    )
    row = render(ex, tok, RoleWeights(1.0, 1.0))
    assert tok.decode(row.input_ids) == "2+2= 4" + tok.eos_token
    assert response_text(tok, row) == " 4" + tok.eos_token
    assert row.trainable_tokens == len(row) - 1  # (1,1): every token but the first is trained


def test_missing_chat_template_is_a_clear_error(tiny_model_no_template_dir):
    from witune.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model_no_template_dir))
    with pytest.raises(ConfigError, match="has no chat template"):
        render(chat("Hi", "Hello"), tok, RoleWeights())


def test_truncation_policies(tiny_tokenizer):
    tok = tiny_tokenizer
    ex = alpaca(inp="a long input " * 20)
    full = render(ex, tok, RoleWeights(0.5, 1.0))
    n_resp = full.response_tokens
    left = tokenize_examples([ex], tok, RoleWeights(0.5, 1.0), max_length=n_resp + 5, truncation="left")
    row = left.rows[0]
    assert len(row) == n_resp + 5 and left.truncated == 1
    assert row.input_ids == full.input_ids[-(n_resp + 5) :] and row.weights[0] == 0.0
    right = tokenize_examples([ex], tok, RoleWeights(0.5, 1.0), max_length=10, truncation="right")
    assert right.rows[0].input_ids == full.input_ids[:10]
    drop = tokenize_examples([ex], tok, RoleWeights(0.5, 1.0), max_length=10, truncation="drop")
    assert drop.rows == [] and drop.dropped_too_long == 1


def test_truncated_to_zero_trainable_tokens(tiny_tokenizer):
    ex = alpaca(inp="context " * 30)
    with pytest.raises(DataError, match=r"mem.jsonl, line 1: truncated to zero trainable tokens"):
        tokenize_examples([ex], tiny_tokenizer, RoleWeights(0.0, 1.0), max_length=8, truncation="right")
    res = tokenize_examples(
        [ex, alpaca()], tiny_tokenizer, RoleWeights(0.0, 1.0), max_length=8, truncation="right", on_error="skip"
    )
    assert len(res.zero_trainable) == 2 - len(res.rows) and "zero trainable" in res.summary()


def test_pad_collate_shifts_labels_once(tiny_tokenizer):
    rows = [render(alpaca(output="x" * n), tiny_tokenizer, RoleWeights(0.2, 1.0)) for n in (1, 9)]
    b = pad_collate(rows, tiny_tokenizer.pad_token_id)
    for i, r in enumerate(rows):
        n = len(r)
        assert b["labels"][i, : n - 1].tolist() == r.input_ids[1:]
        assert b["weights"][i, : n - 1].tolist() == pytest.approx(r.weights[1:])
        assert (b["labels"][i, n - 1 :] == IGNORE_INDEX).all() and (b["weights"][i, n - 1 :] == 0).all()
        assert b["attention_mask"][i].sum() == n


def test_packed_batch_gives_the_unpacked_loss(tiny_tokenizer, tiny_model):
    tok = tiny_tokenizer
    rows = [render(alpaca(f"Task {i}", "in " * i, "out " * (3 + 2 * i)), tok, RoleWeights(0.3, 1.0)) for i in range(6)]
    model = tiny_model.eval()

    def sums(batch, packed):
        extra = {"position_ids": batch["position_ids"]} if packed else {"attention_mask": batch["attention_mask"]}
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], use_cache=False, **extra).logits
        return weighted_nll(logits, batch["labels"], batch["weights"], batch["response_mask"])

    unpacked = sums(pad_collate(rows, tok.pad_token_id), packed=False)
    bins = pack(rows, max_length=max(len(r) for r in rows) * 2)
    assert len(bins) < len(rows)
    packed_batch = packed_collate(bins, tok.pad_token_id)
    packed = sums(packed_batch, packed=True)
    for name in ("weighted_sum", "nonzero", "weight_sum", "tokens", "prompt_nll", "response_nll"):
        torch.testing.assert_close(getattr(packed, name), getattr(unpacked, name), rtol=1e-5, atol=1e-4)
    # The same packed rows with plain causal attention (no position ids) let samples see each other: the loss
    # changes, so the equality above really depends on attention stopping at sample boundaries.
    with torch.no_grad():
        leaky = model(input_ids=packed_batch["input_ids"], use_cache=False).logits
    leaky_sum = weighted_nll(leaky, packed_batch["labels"], packed_batch["weights"]).weighted_sum
    exact_gap = (packed.weighted_sum - unpacked.weighted_sum).abs()
    assert (leaky_sum - unpacked.weighted_sum).abs() > 100 * exact_gap + 1e-3


def test_backend_batch_encoding_equals_transformers_call(tiny_tokenizer, smollm2_dir):
    from witune.data.tokens import _encode, offsets_backend
    from witune.models import load_tokenizer

    texts = ["Hello world", " leading space", "<|im_start|>user\nHi<|im_end|>\n", "ünïcödé ✓\n\n", "a" * 300, ""]
    for tok in (tiny_tokenizer, load_tokenizer(smollm2_dir)):
        ids = [e[0] for e in _encode(offsets_backend(tok), texts)]
        assert ids == tok(texts, add_special_tokens=False)["input_ids"]


def test_many_spans_of_two_kinds_are_found_in_order():
    """Issue 38: every kind was searched again from each span's end, so 100,000 spans of one kind before 100,000
    of another took minutes (quadratic); the cut pieces must stay exactly the same."""
    from witune.data.spans import split_spans

    markers = {"think": ("<think>", "</think>"), "tool_call": ("<tool_call>", "</tool_call>")}
    n = 5_000
    text = "<think>a</think>x" * n + "<tool_call>b</tool_call>y" * n + "<think>c</think><tool_call>d</tool_call>"
    pieces = split_spans(text, markers, None, "m")
    assert "".join(p for p, _ in pieces) == text
    want = [("<think>a</think>", "think"), ("x", None)] * n + [
        ("<tool_call>b</tool_call>", "tool_call"),
        ("y", None),
    ] * n
    assert pieces == want + [("<think>c</think>", "think"), ("<tool_call>d</tool_call>", "tool_call")]
    # a stray closing delimiter of the other kind, far after the first spans, is still found
    stray = "<think>a</think>x" * n + "</tool_call>" + "<think>a</think>"
    with pytest.raises(DataError, match=rf"'</tool_call>' at character {17 * n} closes a tool_call span"):
        split_spans(stray, markers, None, "m")
