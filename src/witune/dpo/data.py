"""Preference data: records with `prompt` / `chosen` / `rejected`, checked one by one with errors that name
the file, the line and the field.

Accepted shapes (those of TRL and of UltraFeedback-style sets), all normalised to TRL's explicit-prompt forms:

- plain: `prompt`, `chosen`, `rejected` are strings;
- conversational: `prompt` is a list of messages (or a string, read as one user message) and `chosen` /
  `rejected` are lists of assistant messages (or strings, read as one assistant message);
- implicit prompt: no `prompt`, `chosen` and `rejected` are whole conversations sharing their first turns
  (UltraFeedback-binarized); the shared turns become the prompt. Conversations that repeat the given `prompt`
  as their first turns (the same data set's other layout) are handled the same way.

One file holds one shape (plain or conversational): mixing them is an error at the first record that differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from witune.data.errors import DataError, Location
from witune.data.readers import read_records
from witune.errors import check_on_error

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class PreferenceData:
    records: list[dict[str, Any]]  # TRL explicit-prompt records: prompt / chosen / rejected
    conversational: bool
    skipped: list[DataError] = field(default_factory=list)

    def summary(self) -> str:
        kind = "conversational" if self.conversational else "plain"
        s = f"{len(self.records)} preference pairs ({kind})"
        if self.skipped:
            s += f", {len(self.skipped)} bad records skipped (first: {self.skipped[0]})"
        return s


def _messages(value: Any, loc: Location, name: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DataError(loc, "expected a non-empty list of {role, content} messages", name)
    out = []
    for i, m in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(m, dict):
            raise DataError(loc, f"expected a {{role, content}} message, got {type(m).__name__}", where)
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise DataError(loc, f"role must be one of {ROLES}, got {role!r}", where + ".role")
        if not isinstance(content, str):
            raise DataError(loc, f"content must be a string, got {type(content).__name__}", where + ".content")
        out.append({"role": role, "content": content})
    return out


def _text(value: Any, loc: Location, name: str) -> str:
    if not isinstance(value, str):
        raise DataError(loc, f"expected a string or a list of messages, got {type(value).__name__}", name)
    if not value.strip():
        raise DataError(loc, "is empty", name)
    return value


def _split_conversations(chosen: list[dict], rejected: list[dict], loc: Location) -> tuple[list, list, list]:
    """Shared leading turns -> prompt; the rest must be assistant turns (TRL's `extract_prompt`, checked)."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    prompt, c, r = chosen[:n], chosen[n:], rejected[n:]
    if not prompt:
        raise DataError(loc, "chosen and rejected share no prompt turns (give a 'prompt' field)", "prompt")
    for name, rest in (("chosen", c), ("rejected", r)):
        if not rest:
            raise DataError(loc, "has no answer after the turns it shares with the other completion", name)
        if any(m["role"] != "assistant" for m in rest):
            raise DataError(loc, "the turns after the shared prompt must be assistant turns", name)
    return prompt, c, r


def to_pair(rec: Any, loc: Location) -> dict[str, Any]:
    """One raw record -> a TRL explicit-prompt record; raises DataError naming the field."""
    if not isinstance(rec, dict):
        raise DataError(loc, f"expected a JSON object with prompt/chosen/rejected, got {type(rec).__name__}")
    for name in ("chosen", "rejected"):
        if name not in rec or rec[name] is None:
            raise DataError(loc, "is missing (preference records need prompt, chosen and rejected)", name)
    chosen, rejected, prompt = rec["chosen"], rec["rejected"], rec.get("prompt")
    conversational = isinstance(chosen, list) or isinstance(rejected, list) or isinstance(prompt, list)
    out: dict[str, Any]  # plain-text pairs hold strings, conversational ones message lists
    if not conversational:
        if prompt is None:
            raise DataError(loc, "is missing (plain-text pairs need a prompt)", "prompt")
        out = {
            "prompt": _text(prompt, loc, "prompt"),
            "chosen": _text(chosen, loc, "chosen"),
            "rejected": _text(rejected, loc, "rejected"),
        }
    else:
        c = (
            _messages(chosen, loc, "chosen")
            if isinstance(chosen, list)
            else [{"role": "assistant", "content": _text(chosen, loc, "chosen")}]
        )
        r = (
            _messages(rejected, loc, "rejected")
            if isinstance(rejected, list)
            else [{"role": "assistant", "content": _text(rejected, loc, "rejected")}]
        )
        if prompt is None or c[0]["role"] != "assistant":
            shared, c, r = _split_conversations(c, r, loc)
            p = shared
        else:
            p = (
                _messages(prompt, loc, "prompt")
                if isinstance(prompt, list)
                else [{"role": "user", "content": _text(prompt, loc, "prompt")}]
            )
        for name, msgs in (("chosen", c), ("rejected", r)):
            if any(m["role"] != "assistant" for m in msgs):
                raise DataError(loc, "must hold assistant messages only (the prompt goes in 'prompt')", name)
            if not "".join(m["content"] for m in msgs).strip():
                raise DataError(loc, "is empty", name)
        if p[-1]["role"] == "assistant":
            raise DataError(loc, "the prompt must end with a user (or tool) turn, not an assistant turn", "prompt")
        out = {"prompt": p, "chosen": c, "rejected": r}
    if out["chosen"] == out["rejected"]:
        raise DataError(loc, "is identical to 'rejected': the pair expresses no preference", "chosen")
    return out


def load_preferences(
    source: str | Path, on_error: str = "raise", split: str = "train", limit: int | None = None
) -> PreferenceData:
    """Read and check every record; `on_error="skip"` skips bad records and lists them in `skipped`."""
    check_on_error(on_error)
    records: list[dict[str, Any]] = []
    skipped: list[DataError] = []
    shape: bool | None = None
    for loc, rec in read_records(source, split):
        try:
            if isinstance(rec, DataError):
                raise rec
            pair = to_pair(rec, loc)
            kind = isinstance(pair["prompt"], list)
            if shape is None:
                shape = kind
            elif kind != shape:
                want = "conversational" if shape else "plain-text"
                raise DataError(loc, f"mixes shapes: earlier records are {want} pairs", "prompt")
            records.append(pair)
        except DataError as err:
            if on_error == "raise":
                raise
            skipped.append(err)
        if limit is not None and len(records) >= limit:
            break
    if not records:
        detail = f" ({len(skipped)} bad records skipped, first: {skipped[0]})" if skipped else ""
        raise DataError(Location(str(source), 0, "file"), f"no usable preference pairs{detail}")
    return PreferenceData(records, bool(shape), skipped)
