"""The canonical in-memory form of one instruction sample, whatever file format it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

from witune.errors import Location

# Roles of chat messages. Alpaca and prompt/completion data become one "user" and one "assistant" turn.
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Message:
    role: str  # one of ROLES
    content: str
    weight: float = 1.0  # the record's per-message weight (`weight` / `loss_weight`): multiplies the role weight


@dataclass(frozen=True)
class Example:
    """One sample: a conversation plus, for Alpaca-style data, the original fields.

    `fields` keeps `instruction`, `input`, `output` (Alpaca) or `prompt`, `completion` so that the Alpaca
    template and the per-field statistics can use them; it is empty for chat data. `sample_weight` and each
    message's `weight` come from the record (1 when it gives none); see `witune.data.weights` for how they
    combine with the role and span weights.
    """

    messages: tuple[Message, ...]
    format: str  # "alpaca", "prompt_completion", "messages", "sharegpt"
    location: Location
    fields: dict[str, str] = field(default_factory=dict)
    sample_weight: float = 1.0  # the record's `sample_weight`: multiplies every token weight of the sample

    @property
    def prompt_text(self) -> str:
        """Everything before the last assistant turn, joined (for statistics and inversion)."""
        last = max(i for i, m in enumerate(self.messages) if m.role == "assistant")
        return "\n".join(m.content for m in self.messages[:last])

    @property
    def response_text(self) -> str:
        """The last assistant turn."""
        return [m.content for m in self.messages if m.role == "assistant"][-1]
