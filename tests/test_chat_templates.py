"""The chat templates of the models people tune, rendered with exact weights (issue 23).

No tokenizer files of these models ship in a registry package, so each test uses the model's *published* Jinja
template (the copies TRL ships in `trl/chat_templates/`, and `tests/data/chat_templates/` for the two TRL does
not have) on a byte-level BPE tokenizer built here with that model's special tokens. For each template: the
response weight reaches exactly the assistant text plus its end-of-turn marker, everything else that is not a
message's text is `template`, multi-turn and final-turn-only hold, the whole-text ids equal the tokenizer's ids
of `apply_chat_template`, and the prompt ids equal those of the template's own generation prompt. Templates
that rewrite earlier turns are refused with a clear message, never mis-weighted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from witune.data import DataError, Example, Location, Message, RoleWeights, render
from witune.data.rendered import generation_prompt_chars

trl = pytest.importorskip("trl")
TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
OWN_TEMPLATES = Path(__file__).parent / "data" / "chat_templates"
LOC = Location("chats.jsonl", 7, "line")

# name: (template file, special tokens, bos, eos, end-of-turn marker of an assistant turn, system supported)
TEMPLATES = {
    "llama3": (TRL_TEMPLATES / "llama3_2.jinja", ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
               "<|eot_id|>"], "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>", True),
    "qwen2_5": (TRL_TEMPLATES / "qwen2_5.jinja", ["<|im_start|>", "<|im_end|>", "<|endoftext|>"], None,
                "<|im_end|>", "<|im_end|>", True),
    "qwen3": (TRL_TEMPLATES / "qwen3.jinja", ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>",
              "</think>"], None, "<|im_end|>", "<|im_end|>", True),
    "gemma2": (TRL_TEMPLATES / "gemma.jinja", ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"], "<bos>",
               "<eos>", "<end_of_turn>", False),
    "gemma3": (TRL_TEMPLATES / "gemma3.jinja", ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"], "<bos>",
               "<eos>", "<end_of_turn>", True),
    "mixtral": (OWN_TEMPLATES / "mixtral_8x7b_instruct_v0_1.jinja", ["<s>", "</s>"], "<s>", "</s>", "</s>", True),
    "phi3_5": (TRL_TEMPLATES / "phi3_5.jinja", ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
               "<|endoftext|>"], None, "<|endoftext|>", "<|end|>", True),
    "phi4": (OWN_TEMPLATES / "phi_4.jinja", ["<|im_start|>", "<|im_sep|>", "<|im_end|>", "<|endoftext|>"], None,
             "<|endoftext|>", "<|im_end|>", True),
    "qwen3_generation_markers": (TRL_TEMPLATES / "qwen3_training.jinja", ["<|im_start|>", "<|im_end|>",
                                 "<|endoftext|>", "<think>", "</think>"], None, "<|im_end|>", "<|im_end|>", True),
}  # fmt: skip

_TOKENIZERS: dict[str, object] = {}


def tokenizer_for(name: str):
    """A byte-level BPE (trained on witune's tiny corpus) with the model's special tokens and chat template."""
    if name not in _TOKENIZERS:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        from witune.models.tiny import tiny_corpus

        path, specials, bos, eos, _, _ = TEMPLATES[name]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=specials,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(tiny_corpus(), trainer=trainer)
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=eos)
        fast.chat_template = path.read_text()
        _TOKENIZERS[name] = fast
    return _TOKENIZERS[name]


def conversation(system: bool = True) -> Example:
    turns = [
        Message("user", "What is the capital of France?"),
        Message("assistant", "The capital of France is Paris."),
        Message("user", "Write a poem about the sea."),
        Message("assistant", "The river follows the sea\nevery morning."),
    ]
    if system:
        turns.insert(0, Message("system", "Answer the question below."))
    return Example(tuple(turns), "messages", LOC)


def decode(tok, ids) -> str:
    return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def response_runs(row) -> list[list[int]]:
    """The token ids of each contiguous run of response tokens."""
    runs: list[list[int]] = []
    for i, (t, r) in enumerate(zip(row.input_ids, row.response)):
        if r:
            if i == 0 or not row.response[i - 1]:
                runs.append([])
            runs[-1].append(t)
    return runs


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_weights_reach_exactly_the_assistant_text_and_its_end_marker(name):
    _, _, _, _, end, has_system = TEMPLATES[name]
    tok = tokenizer_for(name)
    ex = conversation(system=has_system)
    msgs = [{"role": m.role, "content": m.content} for m in ex.messages]
    row = render(ex, tok, RoleWeights(0.1, 1.0))
    # the training ids are the tokenizer's ids of the template's own rendering (no cut was needed)
    assert row.input_ids == tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False).input_ids
    assert row.cuts == 0
    answers = [m.content for m in ex.messages if m.role == "assistant"]
    runs = [decode(tok, run) for run in response_runs(row)]
    lead = "<think>\n\n</think>\n\n" if name == "qwen3" else ""  # Qwen 3 adds it to the last turn (documented)
    if name == "qwen3_generation_markers":
        assert runs == [f"<think>\n\n</think>\n\n{a}{end}" for a in answers]
    else:
        space = " " if name == "mixtral" else ""  # Mixtral writes ' ' + content after [/INST]: the model emits it
        final = "\n<|endoftext|>" if name == "phi3_5" else ""  # Phi-3 closes the conversation with EOS
        assert runs == [f"{space}{a}{end}" for a in answers[:-1]] + [f"{space}{lead}{answers[-1]}{end}{final}"]
    assert {w for w, r in zip(row.weights, row.response) if r} == {1.0}
    # each message's text has its role; everything else is template scaffolding
    for role in ("user", "system"):
        want = "".join(m.content for m in ex.messages if m.role == role)
        assert decode(tok, [t for t, r in zip(row.input_ids, row.roles) if r == role]) == want
    scaffolding = decode(tok, [t for t, r in zip(row.input_ids, row.roles) if r == "template"])
    assert not any(m.content in scaffolding for m in ex.messages), scaffolding
    # final turn only: the same ids, only the last answer trained
    last = render(ex, tok, RoleWeights(0.1, 1.0), final_turn_only=True)
    assert last.input_ids == row.input_ids
    assert [decode(tok, run) for run in response_runs(last)] == runs[-1:]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_prompt_ids_equal_the_templates_generation_prompt(name):
    tok = tokenizer_for(name)
    ex = conversation(system=TEMPLATES[name][5])
    msgs = [{"role": m.role, "content": m.content} for m in ex.messages]
    row = render(ex, tok, RoleWeights(0.1, 1.0), final_turn_only=True)
    prompt = tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
    first_response = row.response.index(True)
    assert row.input_ids[:first_response] == tok(prompt, add_special_tokens=False).input_ids


def test_generation_markers_agree_with_transformers_assistant_mask():
    """Against transformers' own `{% generation %}` mask (the real library): the same tokens are trained, except
    the newline after <|im_end|>, which the TRL template puts inside the generation block and witune leaves to the
    template (what follows the end-of-turn marker is never generated)."""
    tok = tokenizer_for("qwen3_generation_markers")
    ex = conversation()
    msgs = [{"role": m.role, "content": m.content} for m in ex.messages]
    out = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    row = render(ex, tok, RoleWeights(0.0, 1.0))
    assert out["input_ids"] == row.input_ids
    newline_after_end = [
        i > 0 and decode(tok, [t]) == "\n" and decode(tok, [row.input_ids[i - 1]]) == "<|im_end|>"
        for i, t in enumerate(row.input_ids)
    ]
    hf = [bool(m) and not nl for m, nl in zip(out["assistant_masks"], newline_after_end)]
    assert hf == row.response and sum(hf) > 20


def test_gemma2_system_role_is_a_clear_error():
    with pytest.raises(DataError, match=r"chats.jsonl, line 7, field 'messages': chat template failed.*System role"):
        render(conversation(system=True), tokenizer_for("gemma2"), RoleWeights())


def test_mixtral_folds_the_system_message_into_the_first_user_turn():
    tok = tokenizer_for("mixtral")
    row = render(conversation(), tok, RoleWeights(0.1, 1.0, {"system": 0.0}))
    text = decode(tok, row.input_ids)
    assert text.startswith("<s> [INST] Answer the question below.\n\nWhat is the capital")
    assert decode(tok, [t for t, r in zip(row.input_ids, row.roles) if r == "system"]) == "Answer the question below."
    assert {w for w, r in zip(row.weights, row.roles) if r == "system"} == {0.0}


def test_qwen3_reasoning_of_the_last_turn_is_a_weighted_span():
    tok = tokenizer_for("qwen3")
    reasoning = "<think>\nThe capital of France is Paris.\n</think>\n\n"
    ex = Example(
        (Message("user", "What is the capital of France?"), Message("assistant", reasoning + "Paris.")), "messages", LOC
    )
    row = render(ex, tok, RoleWeights(0.0, 1.0, spans={"think": 0.5}))
    think = [t for t, s in zip(row.input_ids, row.spans) if s == "think"]
    assert decode(tok, think) == reasoning.rstrip("\n")
    assert {w for w, s in zip(row.weights, row.spans) if s == "think"} == {0.5}
    assert {w for w, s, r in zip(row.weights, row.spans, row.response) if r and not s} == {1.0}


def test_qwen3_rewrites_are_refused_never_misweighted():
    tok = tokenizer_for("qwen3")
    # reasoning not in the template's own form: the template rewrites it ("<think>\n...\n</think>\n\n")
    odd = Example((Message("user", "Hi"), Message("assistant", "<think>hm</think>Hello")), "messages", LOC)
    with pytest.raises(DataError, match=r"line 7, field 'messages\[1\].content': the chat template rewrites"):
        render(odd, tok, RoleWeights())
    # reasoning in an earlier turn: Qwen 3 drops it once a later user turn follows
    turns = conversation(system=False).messages
    earlier = (turns[0], Message("assistant", "<think>\nshort\n</think>\n\n" + turns[1].content), *turns[2:])
    with pytest.raises(DataError, match=r"field 'messages\[1\].content': the chat template rewrites this assistant"):
        render(Example(earlier, "messages", LOC), tok, RoleWeights())
    # the prompt of the last turn is the template's generation prompt: what Qwen 3 adds after it is trained
    row = render(conversation(system=False), tok, RoleWeights(0.0, 1.0), final_turn_only=True)
    assert decode(tok, response_runs(row)[-1]).startswith("<think>\n\n</think>\n\n")


def test_generation_prompt_chars_is_where_the_last_answer_starts():
    from witune.data import render_segments

    tok = tokenizer_for("llama3")
    segs = render_segments(conversation(), tok, "chat")
    whole = "".join(s.text for s in segs)
    assert whole[: generation_prompt_chars(segs)].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def marker_pieces(name: str) -> list[str]:
    """Texts that are substrings of the template's markers (issue 38): each special token and its end-of-turn
    marker whole, without its brackets, its first two and last three characters, its last character, and "\\n"."""
    _, specials, _, _, end, _ = TEMPLATES[name]
    pieces = {"\n"}
    for marker in {*specials, end}:
        pieces |= {marker, marker[1:-1], marker[2:-2], marker[:2], marker[-3:], marker[-1]}
    return sorted(p for p in pieces if p)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_messages_that_are_pieces_of_the_templates_markers_are_located_by_the_templates_structure(name):
    """A message is found from where the template puts it, never by searching for its text: "end" or "d" next
    to "<|im_end|>" was found inside the marker (the special token split, the user weight on it)."""
    tok = tokenizer_for(name)
    specials = set(TEMPLATES[name][1])
    for piece in marker_pieces(name):
        # Qwen 3 reads a reasoning block out of an assistant text with "</think>" (refused, tested above)
        answer = piece if piece.strip() and "</think>" not in piece else "ok"
        turns = [Message("user", piece), Message("assistant", "Paris."), Message("user", piece)]
        turns += [Message("assistant", answer)]
        if TEMPLATES[name][5]:
            turns.insert(0, Message("system", piece))
        ex = Example(tuple(turns), "messages", LOC)
        msgs = [{"role": m.role, "content": m.content} for m in ex.messages]
        row = render(ex, tok, RoleWeights(0.1, 1.0, {"user": 0.5, "system": 0.25}))
        # the weights fall on each message's own tokens: they decode to its text (templates that trim, trimmed)
        for role, weight in (("user", 0.5), ("system", 0.25)):
            own = [t for t, w, r in zip(row.input_ids, row.weights, row.roles) if r == role and w == weight]
            texts = [m.content for m in ex.messages if m.role == role]
            assert decode(tok, own) in ("".join(texts), "".join(t.strip() for t in texts)), (piece, role)
            assert all(decode(tok, [t]) not in specials or decode(tok, [t]) == piece for t in own), (piece, role)
        runs = [decode(tok, run) for run in response_runs(row)]
        assert len(runs) == 2 and "Paris." in runs[0] and answer in runs[1], (piece, runs)
        want = tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False).input_ids
        if name == "mixtral" and piece[0].isalnum():
            # Mixtral writes "[INST] " + text: a text starting with a letter merges with that space into one token
            # (" d"), which straddles the boundary and is cut by design (witune.data.tokens, rule 1)
            continue
        assert (row.input_ids, row.cuts) == (want, 0), piece
