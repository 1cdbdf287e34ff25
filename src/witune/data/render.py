"""Render an Example into text segments with roles and weights, then into token ids with exact per-token weights.

A sample is first cut into `Segment`s: runs of text whose tokens all get the same weight (template scaffolding,
each message's text, each weighted span inside a message). `witune.data.tokens` then tokenises the whole text
once, as generation does, and maps tokens back to segments by their character offsets; its docstring gives the
rule for the rare token that straddles a segment boundary.

Templates:
- alpaca: the Stanford Alpaca prompts exactly (tatsu-lab/stanford_alpaca, train.py `PROMPT_DICT`, the code the
  PLW paper trained with): the prompt ends with "### Response:" and the response follows with no separator, then
  EOS. The preamble (and BOS, and the blank line between LIMA-style history turns) is `template`; the
  "### Instruction:" block with the user's text is `user`.
- plain: the messages' texts concatenated, EOS after each response.
- chat: the tokenizer's chat template. The whole conversation is rendered once; each message's text is located
  in it from the template's own structure (the conversation rendered again with a placeholder as that text:
  what surrounds the placeholder surrounds the text), never by searching for the text, which a short message
  ("end", "\n") would also match inside the template's markers. Everything else is `template` scaffolding. A response is everything the model emits after the
  template's generation prompt for that turn (`add_generation_prompt=True`): the assistant text, its
  end-of-turn marker, and any text the template itself puts first (Qwen 3's empty `<think>\n\n</think>\n\n`
  on the last turn: the model must produce it at inference). A template that renders a turn differently once
  later turns follow, so that the training text and the prompt at inference disagree, is refused with a
  one-line error naming the message.
After tokenizing, the tokens of every response and span decode back to exactly their text (else an error).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

from witune.data.example import Example
from witune.data.rendered import Rendered, Segment, generation_prompt_chars
from witune.data.spans import split_spans
from witune.data.tokens import tokenize_segments
from witune.data.weights import RoleWeights
from witune.errors import ConfigError, DataError, Location

__all__ = [
    "TEMPLATES",
    "Rendered",
    "Segment",
    "alpaca_prompt",
    "generation_prompt_chars",
    "render",
    "render_segments",
    "tokenize_segments",
]

TEMPLATES = ("auto", "alpaca", "chat", "plain")

# The Stanford Alpaca prompts (tatsu-lab/stanford_alpaca, train.py PROMPT_DICT), as used by the PLW paper.
ALPACA_PREAMBLE_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n\n"
)
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
)
ALPACA_RESPONSE = "### Response:"  # Stanford's prompt ends here: the response follows without a newline


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
    """
    if input.strip():
        return f"{ALPACA_PREAMBLE_INPUT}### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n{ALPACA_RESPONSE}"
    return f"{ALPACA_PREAMBLE}### Instruction:\n{instruction}\n\n{ALPACA_RESPONSE}"


def resolve_template(example: Example, template: str) -> str:
    if template not in TEMPLATES:
        raise ConfigError(f"unknown template {template!r}; choose one of {TEMPLATES}")
    if template != "auto":
        return template
    return {"alpaca": "alpaca", "prompt_completion": "plain"}.get(example.format, "chat")


def render_segments(
    example: Example,
    tokenizer: Any,
    template: str = "auto",
    final_turn_only: bool = False,
    spans: Mapping[str, tuple[str, str]] | None = None,
) -> list[Segment]:
    """The text of a sample cut into segments. EOS (or the template's end-of-turn) closes every response.

    `spans`: delimiters of the span kinds to cut out of each message's text (`RoleWeights.active_markers`).
    """
    template = resolve_template(example, template)
    last_assistant = max(i for i, m in enumerate(example.messages) if m.role == "assistant")

    def trained(i: int) -> bool:
        return example.messages[i].role == "assistant" and (not final_turn_only or i == last_assistant)

    if template == "chat":
        segs = _chat_segments(example, tokenizer, trained)
    else:
        segs = _text_segments(example, tokenizer, template, trained, last_assistant)
    segs = [s for s in segs if s.text]
    if spans and example.format == "alpaca":
        _check_alpaca_spans(example, spans)
    return _cut_spans(segs, spans, example.location) if spans else segs


def _check_alpaca_spans(example: Example, markers: Mapping[str, tuple[str, str]]) -> None:
    """The spans of an Alpaca record checked in its own fields first, so that an error names the field the user
    wrote (`instruction`, `input`, `history[0][1]`) and a character offset in it, not the message witune made."""
    msgs = example.messages
    named = [(f"history[{j // 2}][{j % 2}]", m.content) for j, m in enumerate(msgs[:-2])]
    named += [(k, example.fields.get(k, "")) for k in ("instruction", "input", "output")]
    for name, text in named:
        split_spans(text, markers, example.location, name)


def _text_segments(
    example: Example, tokenizer: Any, template: str, trained: Callable[[int], bool], last_assistant: int
) -> list[Segment]:
    """The alpaca and plain templates."""
    eos = _eos(tokenizer)
    segs = [Segment(bos, "template", False)] if (bos := _bos_text(tokenizer)) else []
    msgs = example.messages
    if template == "plain":
        for i, m in enumerate(msgs):
            text = m.content + eos if m.role == "assistant" else m.content
            segs.append(Segment(text, m.role, trained(i), m.weight, message=i))
        return segs
    # alpaca: earlier turns (LIMA-style history) become earlier Instruction/Response blocks.
    final_input = example.fields.get("input", "")
    final_instruction = example.fields.get("instruction", msgs[last_assistant - 1].content)
    preamble = ALPACA_PREAMBLE_INPUT if final_input.strip() else ALPACA_PREAMBLE
    segs.append(Segment(preamble, "template", False))
    for i, m in enumerate(msgs):
        if m.role == "assistant":
            segs.append(Segment(m.content + eos, "assistant", trained(i), m.weight, message=i))
            if i != last_assistant:
                segs.append(Segment("\n\n", "template", False))
        elif i == last_assistant - 1 and m.role == "user":
            body = f"### Instruction:\n{final_instruction}\n\n"
            if final_input.strip():
                body += f"### Input:\n{final_input}\n\n"
            segs.append(Segment(body + ALPACA_RESPONSE, "user", False, m.weight, message=i))
        else:
            text = f"### Instruction:\n{m.content}\n\n{ALPACA_RESPONSE}" if m.role == "user" else m.content + "\n\n"
            segs.append(Segment(text, m.role, False, m.weight, message=i))
    return segs


def _cut_spans(segs: list[Segment], markers: Mapping[str, tuple[str, str]], loc: Location) -> list[Segment]:
    """Each message's segment cut into its spans (template scaffolding is never cut)."""
    out = []
    for s in segs:
        if s.message is None:
            out.append(s)
            continue
        for text, kind in split_spans(s.text, markers, loc, f"messages[{s.message}].content"):
            out.append(Segment(text, s.role, s.is_response, s.weight, kind, s.message))
    return out


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


def _chat_segments(example: Example, tokenizer: Any, trained: Callable[[int], bool]) -> list[Segment]:
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "this model")
        raise ConfigError(
            f"the tokenizer of {name} has no chat template: use template 'alpaca' or 'plain', "
            "or a model/tokenizer that defines one"
        )
    msgs = [{"role": m.role, "content": m.content} for m in example.messages]
    loc = example.location

    def render(conv: list[dict[str, str]], gen: bool = False) -> str:
        try:
            return tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
        except Exception as e:  # jinja errors: unsupported role, template raising on input
            raise DataError(
                loc, f"chat template failed: {type(e).__name__}: {e}", "messages", kind="template"
            ) from None

    whole = render(msgs)  # the training text: the conversation rendered once
    sentinel = _sentinel(whole)
    segs: list[Segment] = []
    cursor = 0  # everything before it is in `segs`
    for k, m in enumerate(example.messages):
        frame = _frame(msgs, k, sentinel, render)  # the conversation around this message's text
        if m.role != "assistant":
            pos, content = _fit(whole, frame, m.content, cursor)
            if pos < 0:
                raise _rewrites(loc, k, "the text of this message")
            segs.append(Segment(whole[cursor:pos], "template", False))
            segs.append(Segment(content, m.role, False, m.weight, message=k))
            cursor = pos + len(content)
            continue
        header = render(msgs[:k], gen=True)  # the prompt at inference for this turn
        if len(header) < cursor or not whole.startswith(header):
            raise DataError(
                loc,
                "the chat template's prompt for this turn (add_generation_prompt) is not how the whole conversation "
                "renders it (the template renders earlier turns differently once later turns follow), so the "
                "prompt at inference would differ from the one trained on; use template 'plain' or 'alpaca'",
                f"messages[{k}]",
                kind="template",
            )
        segs.append(Segment(whole[cursor : len(header)], "template", False))
        at = len(header)
        pos, content = _fit(whole, frame, m.content, at)
        if pos < 0 and frame and whole.startswith(m.content, at) and whole[at + len(m.content) :] == frame[1]:
            # a template that reads the text (Qwen 3 takes a reasoning block out of it and writes it back in its
            # own form) renders it unlike the placeholder: it must then start where the prompt ends
            pos, content = at, m.content
        if pos < 0:
            own = render(msgs[: k + 1])
            later = k < len(msgs) - 1 and own.startswith(header) and own.startswith(m.content, at)
            raise _rewrites(loc, k, "this assistant turn once later turns follow" if later else "the assistant text")
        lead = whole[at:pos]  # what the template writes before the text (Qwen 3's empty reasoning, Mixtral's ' ')
        end = pos + len(content)
        # the end-of-turn marker belongs to the response: what the template writes after the text when it is last
        own_frame = frame if k == len(msgs) - 1 else _frame(msgs[: k + 1], k, sentinel, render)
        closing = _closing(own_frame[1], whole, end) if own_frame else ""
        added = "" if closing else _eos(tokenizer)  # the template closes nothing: close with EOS ourselves
        segs.append(Segment(lead + content + closing + added, "assistant", trained(k), m.weight, message=k))
        cursor = end + len(closing)
    segs.append(Segment(whole[cursor:], "template", False))
    return segs


def _sentinel(whole: str) -> str:
    """A placeholder text that the rendered conversation does not contain."""
    n = 0
    while f"WITUNE-PLACEHOLDER-{n}" in whole:
        n += 1
    return f"WITUNE-PLACEHOLDER-{n}"


def _frame(
    conv: list[dict[str, str]], k: int, sentinel: str, render: Callable[[list[dict[str, str]]], str]
) -> tuple[str, str] | None:
    """What the template writes before and after message k's text: the conversation rendered with a placeholder
    as that text, split at it. None when the placeholder is not there exactly once (the template drops or
    repeats the text). A message is located from this, never by searching for its text, which a short text
    ("end", "\\n") would also match inside the template's own markers."""
    text = render([*conv[:k], {**conv[k], "content": sentinel}, *conv[k + 1 :]])
    before, found, after = text.partition(sentinel)
    return (before, after) if found and sentinel not in after else None


def _fit(whole: str, frame: tuple[str, str] | None, content: str, lo: int) -> tuple[int, str]:
    """Where a message's text is in `whole`: between its frame, at or after `lo`, as given or trimmed (templates
    that trim). (-1, "") when the frame does not fit (the template renders this text unlike a placeholder)."""
    if frame is None:
        return -1, ""
    before, after = frame
    hi = len(whole) - len(after)
    if len(before) < lo or hi < len(before) or not whole.startswith(before) or not whole.endswith(after):
        return -1, ""
    middle = whole[len(before) : hi]
    if middle in (content, content.strip(), content.lstrip(), content.rstrip()):
        return len(before), middle
    return -1, ""


def _rewrites(loc: Location, k: int, what: str) -> DataError:
    return DataError(
        loc,
        f"the chat template rewrites {what} (it does not appear verbatim where the template puts it), so its "
        "tokens cannot be located exactly; use template 'plain' or 'alpaca', or data in the template's own form",
        f"messages[{k}].content",
        kind="template",
    )


def _closing(tail: str, whole: str, end: int) -> str:
    """The end-of-turn marker after an assistant text: what the template writes after it when the turn is last
    (`tail`, trailing whitespace dropped), as far as the whole conversation has it too. Phi-3 ends a last turn
    with "<|end|>\n<|endoftext|>" but an earlier one with "<|end|>\n": its marker there is "<|end|>"."""
    for candidate in (tail.rstrip(), tail.lstrip().split(maxsplit=1)[0] if tail.strip() else ""):
        if candidate and whole.startswith(candidate, end):
            return candidate
    return ""


def render(
    example: Example, tokenizer: Any, weights: RoleWeights, template: str = "auto", final_turn_only: bool = False
) -> Rendered:
    """One example -> token ids, per-token weights, roles. The single entry point for rendering one sample."""
    segs = render_segments(example, tokenizer, template, final_turn_only, weights.active_markers)
    return tokenize_segments([segs], [example], tokenizer, weights)[0]
