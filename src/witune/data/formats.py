"""Instruction-data formats: small pure detectors and converters to `Example`.

Supported record shapes (one record = one JSON object, CSV row, Parquet row or dataset row):

- alpaca: ``instruction``, ``input`` (optional), ``output``; an optional ``history`` of earlier
  ``[user, assistant]`` pairs (LLaMA-Factory style) makes it a multi-turn conversation.
- self_instruct: ``instruction`` plus ``instances: [{input, output}, ...]`` (Self-Instruct seed tasks):
  one example per instance.
- prompt_completion: ``prompt`` and ``completion`` (or ``response``).
- messages: ``messages: [{role, content}, ...]`` (OpenAI / Tulu style).
- sharegpt: ``conversations: [{from, value}, ...]`` (ShareGPT / Vicuna style).

Weights carried by the data (see `witune.data.weights` for how they combine):

- ``sample_weight`` on any record: multiplies every token weight of that record (self_instruct: of each of
  its instances);
- ``weight`` or ``loss_weight`` (the names axolotl and LLaMA-Factory use) on a message / ShareGPT turn, any role:
  multiplies that message's role weight. Records without messages (alpaca, self_instruct, prompt_completion)
  cannot carry one: a top-level ``weight`` there is an error that says to use ``sample_weight``.

A weight is a number >= 0 and at most `MAX_WEIGHT` (numeric text such as a CSV cell is read as a number);
anything else is an error naming the file, line and field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from witune.data.example import ROLES, Example, Message
from witune.data.weights import MAX_WEIGHT, TOO_LARGE
from witune.errors import DataError, Location, shown

FORMATS = ("alpaca", "self_instruct", "prompt_completion", "messages", "sharegpt")

_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "function_call": "assistant",  # LLaMA-Factory's ShareGPT: the assistant's tool call (trained as a response)
    "observation": "tool",  # ... and the tool's output
}

SAMPLE_WEIGHT = "sample_weight"
MESSAGE_WEIGHTS = ("weight", "loss_weight")


def data_weight(value: Any, location: Location, name: str) -> float:
    """A weight read from a record: a finite number >= 0 (numeric text, as in CSV cells, is read as a number).

    >>> data_weight(0.5, Location("x.jsonl", 3, "line"), "sample_weight"), data_weight("2", None, "w")
    (0.5, 2.0)
    >>> data_weight("heavy", Location("x.jsonl", 3, "line"), "messages[1].weight")
    Traceback (most recent call last):
    ...
    witune.errors.DataError: x.jsonl, line 3, field 'messages[1].weight': expected a number >= 0, got 'heavy'
    """
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise DataError(location, f"expected a number >= 0, got {shown(value)}", name, kind="wrong_type")
    if isinstance(number, int) and number > MAX_WEIGHT:  # compared as an int: 401 digits have no float
        raise DataError(
            location, f"a weight must be at most {MAX_WEIGHT:.0e}, got an integer above it: {TOO_LARGE}", name
        )
    if not math.isfinite(number) or number < 0:
        raise DataError(location, f"a weight must be a finite number >= 0, got {shown(value)}", name)
    if number > MAX_WEIGHT:
        raise DataError(location, f"a weight must be at most {MAX_WEIGHT:.0e}, got {shown(value)}: {TOO_LARGE}", name)
    return float(number)


def _sample_weight(record: Mapping[str, Any], location: Location) -> float:
    value = record.get(SAMPLE_WEIGHT)
    if value is None or value == "":  # absent (an empty CSV cell included): weight 1
        return 1.0
    return data_weight(value, location, SAMPLE_WEIGHT)


def _no_message_weight(record: Mapping[str, Any], location: Location, fmt: str, prefix: str = "") -> None:
    for key in MESSAGE_WEIGHTS:
        if record.get(key) not in (None, ""):
            raise DataError(
                location,
                f"{fmt} records have no messages to carry a per-message weight; use {SAMPLE_WEIGHT!r} to weigh "
                "the whole record",
                prefix + key,
            )


def _message_weight(turn: Mapping[str, Any], location: Location, where: str) -> float:
    given = {k: data_weight(turn[k], location, f"{where}.{k}") for k in MESSAGE_WEIGHTS if turn.get(k) is not None}
    if len(set(given.values())) > 1:
        raise DataError(location, f"'weight' and 'loss_weight' disagree ({given})", f"{where}.loss_weight")
    if SAMPLE_WEIGHT in turn:
        raise DataError(
            location,
            f"{SAMPLE_WEIGHT!r} is a record field (top level), not a message field",
            f"{where}.{SAMPLE_WEIGHT}",
        )
    return next(iter(given.values()), 1.0)


def matching_formats(record: Mapping[str, Any]) -> list[str]:
    """Every format whose identifying keys the record has (more than one means ambiguous).

    >>> matching_formats({"instruction": "Add", "input": "1 2", "output": "3"})
    ['alpaca']
    >>> matching_formats({"prompt": "2+2=", "completion": "4"})
    ['prompt_completion']
    >>> matching_formats({"prompt": "2+2=", "response": "4"})
    ['prompt_completion']
    >>> matching_formats({"messages": [{"role": "user", "content": "hi"}]})
    ['messages']
    >>> matching_formats({"conversations": [{"from": "human", "value": "hi"}]})
    ['sharegpt']
    >>> matching_formats({"instruction": "x", "instances": [{"input": "", "output": "y"}]})
    ['self_instruct']
    >>> matching_formats({"text": "hello"})
    []
    >>> matching_formats({"messages": [], "prompt": "p", "completion": "c"})
    ['prompt_completion', 'messages']
    """
    found = []
    if "instruction" in record and "instances" in record:
        found.append("self_instruct")
    elif "instruction" in record and "output" in record:
        found.append("alpaca")
    if "prompt" in record and ("completion" in record or "response" in record):
        found.append("prompt_completion")
    if "messages" in record:
        found.append("messages")
    if "conversations" in record:
        found.append("sharegpt")
    return found


def detect_format(record: Mapping[str, Any], location: Location) -> str:
    """The one format of a record, or a DataError saying why not.

    >>> detect_format({"prompt": "p", "completion": "c"}, Location("x.jsonl", 1, "line"))
    'prompt_completion'
    >>> detect_format({"text": "t"}, Location("x.jsonl", 1, "line"))
    Traceback (most recent call last):
    ...
    witune.errors.DataError: x.jsonl, line 1: unknown record format (keys: text); expected one of ...
    """
    if not isinstance(record, Mapping):
        raise DataError(location, f"expected a JSON object, got {type(record).__name__}")
    found = matching_formats(record)
    if not found:
        keys = ", ".join(sorted(map(str, record))) or "none"
        raise DataError(
            location,
            f"unknown record format (keys: {keys}); expected one of alpaca (instruction/input/output), "
            "self_instruct (instruction/instances), prompt_completion (prompt/completion), "
            "messages (role/content) or sharegpt (conversations of from/value)",
        )
    if len(found) > 1:
        raise DataError(location, f"ambiguous record: it matches formats {found}; pass format= explicitly")
    return found[0]


def to_examples(record: Mapping[str, Any], fmt: str, location: Location) -> list[Example]:
    """Convert one record of a known format; raises DataError naming the field at fault."""
    if not isinstance(record, Mapping):
        raise DataError(location, f"expected a JSON object, got {type(record).__name__}")
    if fmt in ("alpaca", "self_instruct", "prompt_completion"):
        _no_message_weight(record, location, fmt)
    sample_weight = _sample_weight(record, location)
    if fmt == "alpaca":
        return [_alpaca(record, location, sample_weight=sample_weight)]
    if fmt == "self_instruct":
        instances = record.get("instances")
        if not isinstance(instances, list) or not instances:
            raise DataError(location, "expected a non-empty list of {input, output}", "instances")
        out = []
        for i, inst in enumerate(instances):
            if not isinstance(inst, Mapping):
                raise DataError(location, "expected an object with input and output", f"instances[{i}]")
            _no_message_weight(inst, location, fmt, f"instances[{i}].")  # an instance is no message either
            if SAMPLE_WEIGHT in inst:
                raise DataError(
                    location,
                    f"{SAMPLE_WEIGHT!r} is a record field (top level), not an instance field",
                    f"instances[{i}].{SAMPLE_WEIGHT}",
                )
            rec = {
                "instruction": record.get("instruction"),
                "input": inst.get("input", ""),
                "output": inst.get("output"),
            }
            out.append(_alpaca(rec, location, field_prefix=f"instances[{i}].", sample_weight=sample_weight))
        return out
    if fmt == "prompt_completion":
        key = "completion" if "completion" in record else "response"
        prompt = _text(record, "prompt", location)
        completion = _text(record, key, location, nonempty=True)
        messages = (Message("user", prompt), Message("assistant", completion))
        return [Example(messages, fmt, location, {"prompt": prompt, "completion": completion}, sample_weight)]
    if fmt in ("messages", "sharegpt"):
        return [_conversation(record, fmt, location, sample_weight)]
    raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")


def _text(
    record: Mapping[str, Any],
    key: str,
    location: Location,
    *,
    nonempty: bool = False,
    optional: bool = False,
    name: str | None = None,
) -> str:
    name = name or key
    if key not in record or record[key] is None:
        if optional:
            return ""
        raise DataError(location, "missing field", name, kind="missing_field")
    value = record[key]
    if not isinstance(value, str):
        raise DataError(location, f"expected a string, got {type(value).__name__}", name, kind="wrong_type")
    if nonempty and not value.strip():
        raise DataError(location, "empty response: nothing to train on", name, kind="empty_response")
    return value


def _alpaca(
    record: Mapping[str, Any], location: Location, field_prefix: str = "", sample_weight: float = 1.0
) -> Example:
    instruction = _text(record, "instruction", location, name="instruction")
    if not instruction.strip():
        raise DataError(location, "empty instruction", "instruction")
    inp = _text(record, "input", location, optional=True, name=field_prefix + "input")
    output = _text(record, "output", location, nonempty=True, name=field_prefix + "output")
    messages: list[Message] = []
    history = record.get("history") or []
    if not isinstance(history, list):
        raise DataError(location, "expected a list of [user, assistant] pairs", "history")
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise DataError(location, "expected a [user, assistant] pair of strings", f"history[{i}]")
        messages += [Message("user", pair[0]), Message("assistant", pair[1])]
    user = f"{instruction}\n\n{inp}" if inp.strip() else instruction
    messages += [Message("user", user), Message("assistant", output)]
    fields = {"instruction": instruction, "input": inp, "output": output}
    return Example(tuple(messages), "alpaca", location, fields, sample_weight)


def _conversation(record: Mapping[str, Any], fmt: str, location: Location, sample_weight: float) -> Example:
    key, role_key, content_key = (
        ("messages", "role", "content") if fmt == "messages" else ("conversations", "from", "value")
    )
    turns = record.get(key)
    if not isinstance(turns, list) or not turns:
        raise DataError(location, "expected a non-empty list of turns", key)
    messages = []
    for i, turn in enumerate(turns):
        where = f"{key}[{i}]"
        if not isinstance(turn, Mapping):
            raise DataError(location, "expected an object", where)
        raw_role = turn.get(role_key)
        role = raw_role if fmt == "messages" else _SHAREGPT_ROLES.get(str(raw_role).lower())
        if role not in ROLES:
            raise DataError(location, f"unknown role {raw_role!r}", f"{where}.{role_key}")
        if turn.get("tool_calls"):
            raise DataError(
                location,
                "structured tool_calls are not rendered by witune: write the call into the content (e.g. "
                "<tool_call>...</tool_call>, weighted with --span-weight tool_call=W)",
                f"{where}.tool_calls",
            )
        content = turn.get(content_key)
        if not isinstance(content, str):
            raise DataError(
                location,
                f"expected a string, got {type(content).__name__}",
                f"{where}.{content_key}",
                kind="wrong_type",
            )
        if role == "assistant" and not content.strip():
            raise DataError(
                location, "empty response: nothing to train on", f"{where}.{content_key}", kind="empty_response"
            )
        messages.append(Message(role, content, _message_weight(turn, location, where)))
    if not any(m.role == "assistant" for m in messages):
        raise DataError(location, "conversation has no assistant turn: nothing to train on", key)
    if messages[0].role == "assistant":
        raise DataError(location, "conversation starts with an assistant turn (no prompt before it)", f"{key}[0]")
    return Example(tuple(messages), fmt, location, sample_weight=sample_weight)
