"""Render an Example into text segments with roles, then into token ids with exact per-token weights.

Why segments: the prompt/response boundary must be exact at the token level. Each segment is tokenized on
its own, so no token can straddle a boundary, and the split never depends on re-tokenizing a prefix and
hoping it matches. After tokenizing we check that the response tokens decode back to exactly the response
text (plus the end-of-turn / EOS marker).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from witune.data.example import Example
from witune.data.weights import RoleWeights
from witune.errors import ConfigError, DataError, Location

TEMPLATES = ("auto", "alpaca", "chat", "plain")

# The Stanford Alpaca prompts (tatsu-lab/stanford_alpaca, train.py), as used by the PLW paper.
ALPACA_PREAMBLE_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n\n"
)
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
)


def alpaca_prompt(instruction: str, input: str = "") -> str:
    """The Stanford Alpaca prompt for one instruction (with or without input).

    >>> print(alpaca_prompt("Add the numbers.", "2 3"))  # doctest: +NORMALIZE_WHITESPACE
    Below is an instruction that describes a task, paired with an input that provides further context.
    Write a response that appropriately completes the request.
    <BLANKLINE>
    ### Instruction:
    Add the numbers.
    <BLANKLINE>
    ### Input:
    2 3
    <BLANKLINE>
    ### Response:
    <BLANKLINE>
    """
    if input.strip():
        return f"{ALPACA_PREAMBLE_INPUT}### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    return f"{ALPACA_PREAMBLE}### Instruction:\n{instruction}\n\n### Response:\n"


@dataclass(frozen=True)
class Segment:
    text: str
    role: str  # system, user, assistant, tool or template
    is_response: bool  # trained as response (gets lambda_r); checked to decode back exactly


@dataclass
class Rendered:
    """Token ids of one sample with the weight of *predicting* each token (weights[0] is always 0)."""

    input_ids: list[int]
    weights: list[float]
    roles: list[str]
    response: list[bool]
    location: Location

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trainable_tokens(self) -> int:
        return sum(1 for w in self.weights[1:] if w != 0)

    @property
    def prompt_tokens(self) -> int:
        return sum(1 for r in self.response if not r)

    @property
    def response_tokens(self) -> int:
        return sum(self.response)


def resolve_template(example: Example, template: str) -> str:
    if template not in TEMPLATES:
        raise ConfigError(f"unknown template {template!r}; choose one of {TEMPLATES}")
    if template != "auto":
        return template
    return {"alpaca": "alpaca", "prompt_completion": "plain"}.get(example.format, "chat")


def render_segments(
    example: Example, tokenizer: Any, template: str = "auto", final_turn_only: bool = False
) -> list[Segment]:
    """The text of a sample cut into role segments. EOS (or the template's end-of-turn) closes every response."""
    template = resolve_template(example, template)
    last_assistant = max(i for i, m in enumerate(example.messages) if m.role == "assistant")

    def trained(i: int) -> bool:
        return example.messages[i].role == "assistant" and (not final_turn_only or i == last_assistant)

    if template == "chat":
        return _chat_segments(example, tokenizer, trained)
    eos = _eos(tokenizer)
    segs = [Segment(bos, "template", False)] if (bos := _bos_text(tokenizer)) else []
    if template == "plain":
        for i, m in enumerate(example.messages):
            text = m.content + eos if m.role == "assistant" else m.content
            segs.append(Segment(text, m.role, trained(i)))
        return segs
    # alpaca: earlier turns (LIMA-style history) become earlier Instruction/Response blocks.
    msgs = example.messages
    final_input = example.fields.get("input", "")
    final_instruction = example.fields.get("instruction", msgs[last_assistant - 1].content)
    preamble = ALPACA_PREAMBLE_INPUT if final_input.strip() else ALPACA_PREAMBLE
    segs.append(Segment(preamble, "template", False))
    for i, m in enumerate(msgs):
        if m.role == "assistant":
            segs.append(Segment(m.content + eos, "assistant", trained(i)))
            if i != last_assistant:
                segs.append(Segment("\n\n", "template", False))
        elif i == last_assistant - 1 and m.role == "user":
            body = f"### Instruction:\n{final_instruction}\n\n"
            if final_input.strip():
                body += f"### Input:\n{final_input}\n\n"
            segs.append(Segment(body + "### Response:\n", "user", False))
        else:
            segs.append(
                Segment(
                    f"### Instruction:\n{m.content}\n\n### Response:\n" if m.role == "user" else m.content + "\n\n",
                    m.role,
                    False,
                )
            )
    return segs


def _eos(tokenizer: Any) -> str:
    if not tokenizer.eos_token:
        raise ConfigError("the tokenizer has no eos_token: a response must end with one (set tokenizer.eos_token)")
    return tokenizer.eos_token


_BOS_TEXT: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _bos_text(tokenizer: Any) -> str:
    """The special tokens the tokenizer itself puts before text (e.g. Llama's <s>), as text. Found by
    tokenizing a probe once per tokenizer (memoised: this runs for every rendered example)."""
    if tokenizer not in _BOS_TEXT:
        _BOS_TEXT[tokenizer] = _probe_bos_text(tokenizer)
    return _BOS_TEXT[tokenizer]


def _probe_bos_text(tokenizer: Any) -> str:
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    if len(with_special) > len(bare) and with_special[len(with_special) - len(bare) :] == bare:
        return tokenizer.decode(with_special[: len(with_special) - len(bare)])
    return ""


def _chat_segments(example: Example, tokenizer: Any, trained) -> list[Segment]:
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "this model")
        raise ConfigError(
            f"the tokenizer of {name} has no chat template: use template 'alpaca' or 'plain', "
            "or a model/tokenizer that defines one"
        )
    msgs = [{"role": m.role, "content": m.content} for m in example.messages]
    loc = example.location

    def render(k: int, gen: bool = False) -> str:
        try:
            return tokenizer.apply_chat_template(msgs[:k], tokenize=False, add_generation_prompt=gen)
        except Exception as e:  # jinja errors: unsupported role, template raising on input
            raise DataError(
                loc, f"chat template failed: {type(e).__name__}: {e}", "messages", kind="template"
            ) from None

    segs: list[Segment] = []
    done = ""
    for k, m in enumerate(example.messages):
        if m.role == "assistant":
            header = render(k, gen=True)
            full = render(k + 1)
            _check_prefix(done, header, loc, k)
            _check_prefix(header, full, loc, k)
            segs.append(Segment(header[len(done) :], "template", False))
            body = full[len(header) :]
            start = body.find(m.content)
            if start < 0:
                stripped = m.content.strip()
                start = body.find(stripped)
                if start < 0 or not stripped:
                    raise DataError(
                        loc,
                        "the chat template rewrites the assistant text, so the response cannot be located exactly",
                        f"messages[{k}].content",
                        kind="template",
                    )
                content = stripped
            else:
                content = m.content
            if start:
                segs.append(Segment(body[:start], "template", False))
            rest = body[start + len(content) :]
            closing = rest.rstrip()  # the end-of-turn marker (e.g. <|im_end|>) belongs to the response
            if not closing:
                closing = _eos(tokenizer)  # template adds no end marker: close with EOS ourselves
                rest = closing + rest
            segs.append(Segment(content + closing, "assistant", trained(k)))
            if rest[len(closing) :]:
                segs.append(Segment(rest[len(closing) :], "template", False))
            done = full
        else:
            full = render(k + 1)
            _check_prefix(done, full, loc, k)
            segs.append(Segment(full[len(done) :], m.role, False))
            done = full
    return [s for s in segs if s.text]


def _check_prefix(prefix: str, text: str, loc: Location, k: int) -> None:
    if not text.startswith(prefix):
        raise DataError(
            loc,
            "the chat template renders earlier turns differently once later turns are added, so "
            "turn boundaries are not exact; use template 'plain' or 'alpaca'",
            f"messages[{k}]",
            kind="template",
        )


def tokenize_segments(
    segments_per_example: list[list[Segment]],
    examples: list[Example],
    tokenizer: Any,
    weights: RoleWeights,
    check: bool = True,
) -> list[Rendered]:
    """Tokenize all segments of many examples in one batched call and attach exact weights."""
    texts = [s.text for segs in segments_per_example for s in segs]
    ids = _encode_batch(tokenizer, texts) if texts else []
    out, pos = [], 0
    for segs, ex in zip(segments_per_example, examples):
        r = Rendered([], [], [], [], ex.location)
        response_ids, response_text = [], ""
        for s in segs:
            tok = ids[pos]
            pos += 1
            w = weights.for_segment(s.role, s.is_response)
            r.input_ids += tok
            r.weights += [w] * len(tok)
            r.roles += [s.role] * len(tok)
            r.response += [s.is_response] * len(tok)
            if s.is_response:
                response_ids += tok
                response_text += s.text
        if r.weights:
            r.weights[0] = 0.0  # nothing predicts the first token
        if check and tokenizer.decode(response_ids) != response_text:
            raise DataError(
                ex.location,
                "response tokens do not decode back to the response text "
                f"({tokenizer.decode(response_ids)[:60]!r} vs {response_text[:60]!r}); the tokenizer "
                "normalises text, so the prompt/response boundary would not be exact",
                "response",
                kind="template",
            )
        out.append(r)
    return out


def _encode_batch(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of many texts, no special tokens added. A fast tokenizer's Rust backend is called directly:
    transformers' `__call__` would wrap every encoding in Python dicts, about half of the tokenizing time."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def render(
    example: Example, tokenizer: Any, weights: RoleWeights, template: str = "auto", final_turn_only: bool = False
) -> Rendered:
    """One example -> token ids, per-token weights, roles. The single entry point for rendering one sample."""
    segs = render_segments(example, tokenizer, template, final_turn_only)
    return tokenize_segments([segs], [example], tokenizer, weights)[0]
