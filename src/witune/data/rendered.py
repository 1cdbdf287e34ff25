"""The two shapes a sample takes between an `Example` and a batch: text `Segment`s, then a tokenized `Rendered`."""

from __future__ import annotations

from dataclasses import dataclass, field

from witune.errors import Location


@dataclass(frozen=True)
class Segment:
    """A run of the rendered text whose tokens all get the same weight."""

    text: str
    role: str  # system, user, assistant, tool or template
    is_response: bool  # trained as response (gets lambda_r); checked to decode back exactly
    weight: float = 1.0  # the message's own weight (`weight` / `loss_weight` in the data); 1 for scaffolding
    span: str | None = None  # the span kind (e.g. "think") this text is; checked to decode back exactly
    message: int | None = None  # index of the message it renders (None: template scaffolding)


@dataclass
class Rendered:
    """Token ids of one sample with the weight of *predicting* each token (weights[0] is always 0)."""

    input_ids: list[int]
    weights: list[float]
    roles: list[str]
    response: list[bool]
    location: Location
    spans: list[str] = field(default_factory=list)  # per token: its span kind, "" outside spans ([]: no spans)
    cuts: int = 0  # segment boundaries where the whole-text tokens were cut (witune.data.tokens)

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

    def span_at(self, i: int) -> str:
        """The span kind of token i ("" outside spans)."""
        return self.spans[i] if self.spans else ""

    def sliced(self, sl: slice) -> Rendered:
        """The tokens in `sl` (truncation); the new first token is not predicted by anything (weight 0)."""
        cut = Rendered(
            self.input_ids[sl],
            self.weights[sl],
            self.roles[sl],
            self.response[sl],
            self.location,
            self.spans[sl],
            self.cuts,
        )
        if cut.weights:
            cut.weights[0] = 0.0
        return cut


def generation_prompt_chars(segments: list[Segment]) -> int:
    """Characters of the rendered text before the last assistant message: the prompt generation feeds the model
    (`witune.eval.generation.format_prompt`). 0 when there is no assistant message."""
    last = max((s.message for s in segments if s.role == "assistant" and s.message is not None), default=None)
    pos = 0
    for s in segments:
        if s.message == last:
            return pos
        pos += len(s.text)
    return 0
