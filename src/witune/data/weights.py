"""Every static loss weight of a token, in one typed object (`RoleWeights`), and the rule that combines them.

The weight of predicting a token is the product

    role weight x message weight x span weight x sample weight

- role weight: `roles[r]` when the token's role r has one (`--role-weight r=W`), else lambda_r (`response`)
  for the tokens of a trained response, else lambda_p (`prompt`). `--role-weight` replaces lambda_p / lambda_r
  for that role; nothing else replaces anything, the other factors multiply;
- message weight: the data's `weight` / `loss_weight` on that message (any role; 1 when absent). It covers
  the message's text and, for a response, its end-of-turn marker; template scaffolding (role headers) is not
  part of any message. A message weight 0 takes the message out of the loss (and out of the `nonzero` count);
- span weight: `spans[k]` for the tokens of a span of kind k (`--span-weight think=0.5`: `<think> ... </think>`
  including its delimiters; the delimiters of each kind are `span_markers[k]`); 1 outside spans;
- sample weight: the record's `sample_weight` (1 when absent), on every token of the sample.

Normalisers (`witune.loss`) then see these final weights: `nonzero` counts the tokens whose final weight is not
0 (a sample weight of 0.5 halves that sample's contribution, it does not change the count); `weight_sum`
divides by the sum of the final weights, so a uniform factor on every token cancels out, and a sample or message
weight only shifts the balance between samples and messages; `tokens` counts every labelled token.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from witune.data.example import ROLES
from witune.errors import ConfigError, shown
from witune.flat_config import ConfigKeyError

# The largest weight of a token (the product of its factors). The loss adds w * nll over a step and the gradient
# norm adds squares of gradients proportional to w, in float32 (max 3.4e38): a weight of 1e38 trained with loss
# inf, then NaN. 1e12 leaves those sums many orders of magnitude of room.
MAX_WEIGHT = 1e12
TOO_LARGE = "float32 sums of the loss and its gradient would overflow (loss inf, then NaN)"

# "template" is the scaffolding a chat template adds around messages (role headers, separators, BOS).
TOKEN_ROLES = (*ROLES, "template")

# Span kinds known without configuration: reasoning traces and tool calls (Qwen, Hermes and others write calls
# as <tool_call>...</tool_call>). Tool *outputs* are messages of the `tool` role: weigh them by role.
DEFAULT_SPAN_MARKERS: dict[str, tuple[str, str]] = {
    "think": ("<think>", "</think>"),
    "tool_call": ("<tool_call>", "</tool_call>"),
}


@dataclass(frozen=True)
class RoleWeights:
    """lambda_p (`prompt`) and lambda_r (`response`), optional per-role overrides and span weights.

    A token of a response segment (the assistant turn(s) being trained) gets `response`; every other token
    gets `prompt`; `roles[r]`, when given, replaces either for every token of role r. `spans[k]` multiplies the
    tokens of every span of kind k, delimited by `span_markers[k]` (defaults: `DEFAULT_SPAN_MARKERS`); text is
    cut into spans only for the kinds given a weight. Message and sample weights come from the data; the module
    docstring gives the whole rule.

    >>> RoleWeights(0.1, 1.0).for_segment("user", False), RoleWeights(0.1, 1.0).for_segment("assistant", True)
    (0.1, 1.0)
    >>> RoleWeights(0.1, 1.0, {"system": 0.0}).for_segment("system", False)
    0.0
    >>> RoleWeights(0.1, 1.0, spans={"think": 0.5}).for_segment("assistant", True, message_weight=2.0, span="think")
    1.0
    >>> RoleWeights(0.0, 0.0)
    Traceback (most recent call last):
    ...
    witune.flat_config.ConfigKeyError: prompt and response weights are both zero: no token would be trained ...
    """

    prompt: float = 0.0
    response: float = 1.0
    roles: Mapping[str, float] = field(default_factory=dict)
    spans: Mapping[str, float] = field(default_factory=dict)
    span_markers: Mapping[str, tuple[str, str]] = field(default_factory=lambda: dict(DEFAULT_SPAN_MARKERS))

    def __post_init__(self) -> None:
        """Errors are `ConfigKeyError`s keyed by the setting at fault (prompt_weight, response_weight,
        role_weights, span_weights, span_markers), so that a config can point at its line."""
        named = {"prompt weight": ("prompt_weight", self.prompt), "response weight": ("response_weight", self.response)}
        named.update({f"weight of role {r!r}": ("role_weights", w) for r, w in self.roles.items()})
        named.update({f"weight of span {k!r}": ("span_weights", w) for k, w in self.spans.items()})
        for kind, pair in self.span_markers.items():
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(d, str) and d for d in pair)):
                raise ConfigKeyError(
                    "span_markers", f"span {kind!r} needs two non-empty delimiters (opening, closing), got {pair!r}"
                )
            if pair[0] == pair[1]:
                raise ConfigKeyError(
                    "span_markers", f"span {kind!r}: the opening and closing delimiters must differ, got {pair[0]!r}"
                )
        _check_distinct_markers(self.span_markers)
        unknown_spans = set(self.spans) - set(self.span_markers)
        if unknown_spans:
            raise ConfigKeyError(
                "span_weights",
                f"no delimiters for span kinds {sorted(unknown_spans)}; known: {sorted(self.span_markers)} "
                "(give new ones with span_markers, e.g. --span-markers reason='<reason>,</reason>')",
            )
        for name, (key, w) in named.items():
            if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ConfigKeyError(key, f"{name} must be a finite number >= 0, got {shown(w)}")
            if w > MAX_WEIGHT:
                raise ConfigKeyError(key, f"{name} is {w:.3g}, above {MAX_WEIGHT:.0e}: {TOO_LARGE}")
        unknown = set(self.roles) - set(TOKEN_ROLES)
        if unknown:
            raise ConfigKeyError(
                "role_weights", f"unknown roles {sorted(unknown)} in role weights; valid roles: {list(TOKEN_ROLES)}"
            )
        if self.prompt == 0 and self.response == 0 and not any(w > 0 for w in self.roles.values()):
            raise ConfigKeyError(
                "response_weight",
                "prompt and response weights are both zero: no token would be trained "
                "(set response_weight > 0, e.g. 1 for conventional instruction tuning)",
            )

    def for_segment(self, role: str, is_response: bool, message_weight: float = 1.0, span: str | None = None) -> float:
        """Role weight x message weight x span weight (the sample weight is applied per sample)."""
        base = self.roles[role] if role in self.roles else (self.response if is_response else self.prompt)
        return float(base) * message_weight * (float(self.spans[span]) if span else 1.0)

    @property
    def active_markers(self) -> dict[str, tuple[str, str]]:
        """Delimiters of the span kinds that have a weight: only these cut the text into spans."""
        return {k: tuple(self.span_markers[k]) for k in self.spans}  # type: ignore[misc]


def _check_distinct_markers(markers: Mapping[str, tuple[str, str]]) -> None:
    """No delimiter of one span kind may be part of another kind's: spans are found by their delimiters, so
    `a` = ('<th', '</th') beside `think` = ('<think>', '</think>') would let one kind take the other's spans
    (at a tie, the other would win by its name) in silence."""
    kinds = list(markers.items())
    for i, (a, pair_a) in enumerate(kinds):
        for b, pair_b in kinds[i + 1 :]:
            for da in pair_a:
                for db in pair_b:
                    if da in db or db in da:
                        inner, outer = ((a, da), (b, db)) if da in db else ((b, db), (a, da))
                        raise ConfigKeyError(
                            "span_markers",
                            f"span markers: the delimiter {inner[1]!r} of span kind {inner[0]!r} is part of "
                            f"{outer[1]!r} of span kind {outer[0]!r}, so one kind would take the other's spans; "
                            "give each kind delimiters that are not part of another's",
                        )


def weight_pair(prompt_weight: float, response_weight: float, plw: float | None = None) -> tuple[float, float]:
    """(lambda_p, lambda_r) of a setting: a PLW, when given, overrides both (PLW paper: prompt weight = PLW,
    response weight = 1). The one place that maps a PLW to the pair.

    >>> weight_pair(0.0, 1.0, plw=0.1), weight_pair(0.2, 0.5)
    ((0.1, 1.0), (0.2, 0.5))
    """
    if plw is not None:
        return plw, 1.0
    return prompt_weight, response_weight


def check_weight_range(named: Mapping[str, float | None], allow_above_one: bool, hint: str) -> list[str]:
    """Loss weights outside the papers' range [0, 1] are refused unless explicitly allowed (`hint` says how).

    Both papers sweep lambda_p, lambda_r and the PLW in [0, 1]; a 5 typed for 0.5 would otherwise train a
    different model in silence. Returns the warnings to print when values above 1 were allowed.
    """
    warnings = []
    for name, w in named.items():
        if w is None:
            continue
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"{name} must be a finite number >= 0, got {shown(w)}")
        if w > 1:
            if not allow_above_one:
                raise ConfigError(f"{name} is {shown(w)}, above the papers' range [0, 1]; if you mean it, {hint}")
            warnings.append(f"{name} is {shown(w)}, above the papers' range [0, 1] (allowed by request)")
    return warnings


def api_label(key: str, item: str | None) -> str:
    """How the Python API names a weight: `prompt_weight`, `role_weights['system']`."""
    return key if item is None else f"{key}[{item!r}]"


def build_role_weights(
    prompt_weight: float | None = None,
    response_weight: float | None = None,
    plw: float | None = None,
    roles: Mapping[str, float] | None = None,
    spans: Mapping[str, float] | None = None,
    span_markers: Mapping[str, Sequence[str]] | None = None,
    *,
    allow_above_one: bool = False,
    hint: str = "pass allow_weight_above_one=True",
    label: Callable[[str, str | None], str] = api_label,
) -> tuple[RoleWeights, list[str]]:
    """(RoleWeights, warnings) from weight settings: configs, the CLI and the Python API all build them here.

    Every weight is range-checked (`check_weight_range`: `hint` says how to allow more, `label(setting, role or
    kind)` names it; warnings for weights allowed above 1), a PLW mapped to the pair, `span_markers` merged over
    the defaults. Every error is a `ConfigKeyError` keyed by the setting at fault.
    """
    named: dict[tuple[str, str | None], float | None] = {
        (k, None): w for k, w in [("prompt_weight", prompt_weight), ("response_weight", response_weight), ("plw", plw)]
    }
    named.update({("role_weights", r): w for r, w in (roles or {}).items()})
    named.update({("span_weights", k): w for k, w in (spans or {}).items()})
    warnings: list[str] = []
    for (key, item), w in named.items():
        try:
            warnings += check_weight_range({label(key, item): w}, allow_above_one, hint)
        except ConfigError as e:
            raise ConfigKeyError(key, str(e)) from None
    # A YAML list is a pair too; anything else goes to RoleWeights as given, which refuses it in one line.
    markers: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in (span_markers or {}).items()}
    pair = weight_pair(
        0.0 if prompt_weight is None else prompt_weight, 1.0 if response_weight is None else response_weight, plw
    )
    weights = RoleWeights(*pair, dict(roles or {}), dict(spans or {}), {**DEFAULT_SPAN_MARKERS, **markers})
    return weights, warnings
