"""Static weights (issue 21) and whole-text tokenising (issue 20): message, sample and span weights; the ids
trained equal the ids generation feeds the model; bad weights are one line naming file, line and field."""

from __future__ import annotations

import json
import math

import pytest
import torch

from witune.data import (
    ConfigError,
    DataError,
    Example,
    Location,
    Message,
    RoleWeights,
    load_examples,
    render,
    render_segments,
    tokenize_examples,
)
from witune.data.rendered import generation_prompt_chars
from witune.loss import IGNORE_INDEX, weighted_nll

LOC = Location("mem.jsonl", 3, "line")


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# --- issue 20: the ids trained are the ids of the whole text, and the prompt ids are generation's ---------------


@pytest.mark.parametrize("template", ["alpaca", "plain", "chat"])
def test_prompt_ids_at_training_equal_generation_ids_on_real_records(template, smollm2_dir, shared_data):
    from witune.eval.generation import format_prompt
    from witune.models import load_tokenizer

    tok = load_tokenizer(smollm2_dir)
    gsm = load_examples(shared_data / "train" / "gsm8k_train_alpaca.json", limit=60).examples
    seeds = load_examples(shared_data / "train" / "alpaca_seed_tasks.jsonl", limit=40).examples
    lima = load_examples(shared_data / "train" / "lima_alpaca_format.json", limit=200).examples
    rows = tokenize_examples(gsm + seeds + lima, tok, RoleWeights(0.1, 1.0), template=template).rows
    for ex, row in zip(gsm + seeds + lima, rows):
        segs = render_segments(ex, tok, template)
        text = "".join(s.text for s in segs)
        prompt = text[: generation_prompt_chars(segs)]
        generated_from = tok(prompt, add_special_tokens=False).input_ids
        assert row.input_ids[: len(generated_from)] == generated_from, ex.location
        if not row.cuts:  # the whole text's own ids, nothing re-tokenised
            assert row.input_ids == tok(text, add_special_tokens=False).input_ids
    for ex, row in zip(gsm, rows):  # generation's own path: format_prompt + the tokenizer
        user = ex.messages[-2].content
        ids = tok(format_prompt(tok, user, template=template), add_special_tokens=False).input_ids
        assert row.input_ids[: len(ids)] == ids and row.response[len(ids)]
    if template == "alpaca":  # the bug of issue 20: "request.\n\n###" was '\n\n' + '###' in training
        pieces = [tok.decode([t]) for t in rows[0].input_ids[:30]]
        i = pieces.index("###")
        assert pieces[i - 2 : i] == ["\n", "\n"]
        assert sum(1 for r in rows if r.cuts) <= 10  # rare: witune.data.tokens counts them on the shared data


def test_a_straddling_token_is_cut_at_the_boundary(smollm2_dir):
    from witune.models import load_tokenizer

    tok = load_tokenizer(smollm2_dir)
    ex = Example(
        (Message("user", "Done."), Message("assistant", "... yes")),
        "prompt_completion",
        LOC,
        {"prompt": "Done.", "completion": "... yes"},
    )
    whole = tok("Done.... yes" + tok.eos_token, add_special_tokens=False).input_ids
    assert "...." in [tok.decode([t]) for t in whole]  # one token across the prompt/response boundary
    row = render(ex, tok, RoleWeights(0.5, 1.0))
    assert row.cuts == 1
    first = row.response.index(True)
    assert row.input_ids[:first] == tok("Done.", add_special_tokens=False).input_ids  # generation's prompt ids
    assert tok.decode(row.input_ids[first:]) == "... yes" + tok.eos_token


# --- issue 21: message, sample and span weights ------------------------------------------------------------------


def test_message_weights_follow_llama_factory_v1(tiny_tokenizer):
    """LLaMA-Factory v1 (core/rendering/label.py, trainers/sft_trainer.py): each assistant region, from after
    the assistant header through the end marker, gets its message's loss_weight; prompts get 0; the loss is
    sum(w * nll) / sum(w). The same example by hand, against witune's weights and its weight_sum normaliser."""
    tok = tiny_tokenizer
    ex = Example(
        (
            Message("user", "What is the capital of France?"),
            Message("assistant", "The capital of France is Paris.", 0.5),
            Message("user", "Write a poem about the sea."),
            Message("assistant", "The river follows the sea.", 2.0),
        ),
        "messages",
        LOC,
    )
    row = render(ex, tok, RoleWeights(0.0, 1.0))
    ids = row.input_ids
    start = tok("<|im_start|>assistant\n", add_special_tokens=False).input_ids
    end = tok.convert_tokens_to_ids("<|im_end|>")
    by_hand, region, k = [0.0] * len(ids), 0, 0
    while k < len(ids):  # LLaMA-Factory's scan for start ... end marker regions
        if ids[k : k + len(start)] == start:
            stop = ids.index(end, k + len(start))
            weight = (0.5, 2.0)[region]
            for t in range(k + len(start), stop + 1):
                by_hand[t] = weight
            region, k = region + 1, stop + 1
        else:
            k += 1
    assert region == 2 and row.weights == by_hand
    torch.manual_seed(0)
    logits = torch.randn(1, len(ids) - 1, tok.vocab_size)
    labels, w = torch.tensor([ids[1:]]), torch.tensor([row.weights[1:]])
    nll = torch.nn.functional.cross_entropy(logits[0], labels[0], reduction="none")
    sums = weighted_nll(logits, labels, w)
    assert float(sums.loss("weight_sum")) == pytest.approx(float((nll * w[0]).sum() / w[0].sum()), rel=1e-6)
    n1, n2 = by_hand.count(0.5), by_hand.count(2.0)
    assert float(sums.normalizer("weight_sum")) == pytest.approx(0.5 * n1 + 2.0 * n2)
    assert float(sums.normalizer("nonzero")) == n1 + n2


def test_message_weights_on_any_role_and_precedence_with_role_weights(tiny_tokenizer, tmp_path):
    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "Be brief.", "weight": 3.0},
                    {"role": "user", "content": "Hi", "loss_weight": 0.5},
                    {"role": "assistant", "content": "Hello.", "loss_weight": 0.25},
                ],
                "sample_weight": 2.0,
            }
        ],
    )
    ex = load_examples(path).examples[0]
    assert [m.weight for m in ex.messages] == [3.0, 0.5, 0.25] and ex.sample_weight == 2.0
    row = render(ex, tiny_tokenizer, RoleWeights(0.1, 1.0, {"system": 0.2}))

    def weights_of(role):
        return sorted({round(w, 9) for w, r in zip(row.weights[1:], row.roles[1:]) if r == role})

    # role weight (--role-weight replaces lambda_p) x message weight x sample weight
    assert weights_of("system") == [round(0.2 * 3.0 * 2.0, 9)]
    assert weights_of("user") == [round(0.1 * 0.5 * 2.0, 9)]
    assert weights_of("assistant") == [round(1.0 * 0.25 * 2.0, 9)]
    assert weights_of("template") == [round(0.1 * 2.0, 9)]  # scaffolding belongs to no message


def test_sample_weight_scales_every_token_and_what_each_normaliser_then_means(tiny_tokenizer):
    plain = Example((Message("user", "Add 2 and 3."), Message("assistant", "5")), "messages", LOC)
    heavy = Example(plain.messages, "messages", LOC, sample_weight=0.5)
    a, b = (render(e, tiny_tokenizer, RoleWeights(0.1, 1.0)) for e in (plain, heavy))
    assert a.input_ids == b.input_ids and b.weights == [0.5 * w for w in a.weights]
    labels = torch.tensor([a.input_ids[1:]])
    logits = torch.randn(1, len(a) - 1, tiny_tokenizer.vocab_size)
    sa, sb = (weighted_nll(logits, labels, torch.tensor([r.weights[1:]])) for r in (a, b))
    assert float(sb.normalizer("nonzero")) == float(sa.normalizer("nonzero"))  # the count is unchanged
    assert float(sb.loss("nonzero")) == pytest.approx(0.5 * float(sa.loss("nonzero")), rel=1e-6)
    assert float(sb.loss("weight_sum")) == pytest.approx(float(sa.loss("weight_sum")), rel=1e-6)  # cancels


def test_reasoning_spans_from_real_records_decode_back_and_get_only_their_weight(smollm2_dir, shared_data):
    """GSM8K solutions as reasoning traces: '<think>' + the worked solution + '</think>', then the final
    sentence as the answer. The span's tokens decode to exactly its text; its weight reaches only them."""
    from witune.models import load_tokenizer

    tok = load_tokenizer(smollm2_dir)
    records = load_examples(shared_data / "train" / "gsm8k_train_alpaca.json", limit=40).examples
    examples, spans = [], []
    for r in records:
        answer = r.response_text.strip().split("\n")[-1]
        think = f"<think>\n{r.response_text}\n</think>"
        spans.append(think)
        msgs = (Message("user", r.messages[-2].content), Message("assistant", f"{think}\n\n{answer}"))
        examples.append(Example(msgs, "messages", r.location))
    weights = RoleWeights(0.0, 1.0, spans={"think": 0.3})
    for template in ("chat", "plain"):
        data = tokenize_examples(examples, tok, weights, template=template)
        assert data.span_counts == {"think": len(examples)} and data.warnings(weights) == []
        for row, think in zip(data.rows, spans):
            in_span = [i for i, s in enumerate(row.spans) if s == "think"]
            assert tok.decode([row.input_ids[i] for i in in_span]) == think
            assert in_span == list(range(in_span[0], in_span[-1] + 1))
            assert {round(row.weights[i], 9) for i in in_span} == {0.3}
            rest = {w for i, (w, r) in enumerate(zip(row.weights, row.response)) if r and i not in in_span}
            assert rest == {1.0}


def test_custom_span_markers_and_tool_calls(tiny_tokenizer):
    text = "Let me check. <tool_call>weather(Paris)</tool_call> It is sunny."
    ex = Example((Message("user", "Weather?"), Message("assistant", text)), "messages", LOC)
    row = render(ex, tiny_tokenizer, RoleWeights(0.0, 1.0, spans={"tool_call": 0.2}))
    call = [t for t, s in zip(row.input_ids, row.spans) if s == "tool_call"]
    assert tiny_tokenizer.decode(call) == "<tool_call>weather(Paris)</tool_call>"
    custom = RoleWeights(0.0, 1.0, spans={"reason": 0.5}, span_markers={"reason": ("[[", "]]")})
    row = render(Example((ex.messages[0], Message("assistant", "[[a b]] c")), "messages", LOC), tiny_tokenizer, custom)
    assert tiny_tokenizer.decode([t for t, s in zip(row.input_ids, row.spans) if s == "reason"]) == "[[a b]]"
    with pytest.raises(ConfigError, match="no delimiters for span kinds"):
        RoleWeights(spans={"reason": 0.5})


# --- bad input: one line naming file, line and field -------------------------------------------------------------


@pytest.mark.parametrize(
    ("turn", "message"),
    [
        ({"weight": -1}, r"line 1, field 'messages\[1\].weight': a weight must be a finite number >= 0, got -1"),
        ({"weight": "NaN"}, r"line 1, field 'messages\[1\].weight': a weight must be a finite number >= 0"),
        ({"loss_weight": "heavy"}, r"line 1, field 'messages\[1\].loss_weight': expected a number >= 0, got 'heavy'"),
        ({"loss_weight": True}, r"field 'messages\[1\].loss_weight': expected a number >= 0, got True"),
        ({"weight": 1, "loss_weight": 2}, r"field 'messages\[1\].loss_weight': 'weight' and 'loss_weight' disagree"),
        ({"sample_weight": 2}, r"field 'messages\[1\].sample_weight': 'sample_weight' is a record field"),
    ],
)
def test_bad_message_weights(tmp_path, turn, message):
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello", **turn}]
    path = write_jsonl(tmp_path / "bad.jsonl", [{"messages": msgs}])
    with pytest.raises(DataError, match=message):
        load_examples(path)


def test_bad_sample_weights_and_formats_that_cannot_carry_a_message_weight(tmp_path):
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [{"instruction": "x", "output": "y"}, {"instruction": "x", "output": "y", "sample_weight": -2}],
    )
    with pytest.raises(DataError, match=r"a.jsonl, line 2, field 'sample_weight': a weight must be a finite number"):
        load_examples(path)
    path = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "p", "completion": "c", "weight": 0.5}])
    with pytest.raises(DataError, match=r"b.jsonl, line 1, field 'weight': prompt_completion records have no messages"):
        load_examples(path)
    csv = tmp_path / "c.csv"
    csv.write_text("instruction,output,sample_weight\nAdd.,3,0.5\nSub.,1,\n")
    assert [e.sample_weight for e in load_examples(csv).examples] == [0.5, 1.0]  # CSV cells are text


def test_unterminated_and_stray_spans_name_file_line_and_message(tmp_path, tiny_tokenizer):
    weights = RoleWeights(spans={"think": 0.5})
    for content, why in (("<think>no end", "unterminated think span"), ("done</think> ok", "never opened")):
        msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": content}]
        path = write_jsonl(tmp_path / "s.jsonl", [{"messages": msgs}, {"messages": msgs}])
        with pytest.raises(DataError, match=rf"s.jsonl, line 1, field 'messages\[1\].content': .*{why}"):
            tokenize_examples(load_examples(path).examples, tiny_tokenizer, weights)
    # without a weight for the kind, the delimiters are plain text
    assert tokenize_examples(load_examples(path).examples, tiny_tokenizer, RoleWeights()).rows


def test_a_span_weight_for_a_span_that_never_occurs_is_a_warning_with_counts(tiny_tokenizer, tmp_path):
    from witune.cli.main import main

    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": msgs}] * 3)
    weights = RoleWeights(spans={"think": 0.5})
    data = tokenize_examples(load_examples(path).examples, tiny_tokenizer, weights)
    assert data.span_counts == {"think": 0}
    assert data.warnings(weights) == [
        "span weight think=0.5: no <think>...</think> span in any of the 3 rows, so it weighs nothing "
        "(check the delimiters: span_markers)"
    ]
    assert not math.isnan(sum(data.rows[0].weights))
    assert IGNORE_INDEX < 0 and main is not None
