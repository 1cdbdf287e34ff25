"""Instruction-data formats: small pure detectors and converters to `Example`.

Supported record shapes (one record = one JSON object, CSV row, Parquet row or dataset row):

- alpaca: ``instruction``, ``input`` (optional), ``output``; an optional ``history`` of earlier
  ``[user, assistant]`` pairs (LLaMA-Factory style) makes it a multi-turn conversation.
- self_instruct: ``instruction`` plus ``instances: [{input, output}, ...]`` (Self-Instruct seed tasks):
  one example per instance.
- prompt_completion: ``prompt`` and ``completion`` (or ``response``).
- messages: ``messages: [{role, content}, ...]`` (OpenAI / Tulu style).
- sharegpt: ``conversations: [{from, value}, ...]`` (ShareGPT / Vicuna style).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from witune.data.example import ROLES, Example, Message
from witune.errors import DataError, Location

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
    "function_call": "tool",
    "observation": "tool",
}


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
    if fmt == "alpaca":
        return [_alpaca(record, location)]
    if fmt == "self_instruct":
        instances = record.get("instances")
        if not isinstance(instances, list) or not instances:
            raise DataError(location, "expected a non-empty list of {input, output}", "instances")
        out = []
        for i, inst in enumerate(instances):
            if not isinstance(inst, Mapping):
                raise DataError(location, "expected an object with input and output", f"instances[{i}]")
            rec = {
                "instruction": record.get("instruction"),
                "input": inst.get("input", ""),
                "output": inst.get("output"),
            }
            out.append(_alpaca(rec, location, field_prefix=f"instances[{i}]."))
        return out
    if fmt == "prompt_completion":
        key = "completion" if "completion" in record else "response"
        prompt = _text(record, "prompt", location)
        completion = _text(record, key, location, nonempty=True)
        messages = (Message("user", prompt), Message("assistant", completion))
        return [Example(messages, fmt, location, {"prompt": prompt, "completion": completion})]
    if fmt in ("messages", "sharegpt"):
        return [_conversation(record, fmt, location)]
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


def _alpaca(record: Mapping[str, Any], location: Location, field_prefix: str = "") -> Example:
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
    return Example(tuple(messages), "alpaca", location, fields)


def _conversation(record: Mapping[str, Any], fmt: str, location: Location) -> Example:
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
        messages.append(Message(role, content))
    if not any(m.role == "assistant" for m in messages):
        raise DataError(location, "conversation has no assistant turn: nothing to train on", key)
    if messages[0].role == "assistant":
        raise DataError(location, "conversation starts with an assistant turn (no prompt before it)", f"{key}[0]")
    return Example(tuple(messages), fmt, location)
