"""Loss weights per role: lambda_p for prompt tokens, lambda_r for response tokens, optional per-role values."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from witune.data.example import ROLES
from witune.errors import ConfigError

# "template" is the scaffolding a chat template adds around messages (role headers, separators, BOS).
TOKEN_ROLES = (*ROLES, "template")


@dataclass(frozen=True)
class RoleWeights:
    """lambda_p (`prompt`) and lambda_r (`response`), with optional per-role overrides.

    A token of a response segment (the assistant turn(s) being trained) gets `response`; every other token
    gets `prompt`; `roles[r]`, when given, replaces either for every token of role r.

    >>> RoleWeights(0.1, 1.0).for_segment("user", False), RoleWeights(0.1, 1.0).for_segment("assistant", True)
    (0.1, 1.0)
    >>> RoleWeights(0.1, 1.0, {"system": 0.0}).for_segment("system", False)
    0.0
    >>> RoleWeights(0.0, 0.0)
    Traceback (most recent call last):
    ...
    witune.errors.ConfigError: prompt and response weights are both zero: no token would be trained ...
    """

    prompt: float = 0.0
    response: float = 1.0
    roles: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        named = {"prompt weight": self.prompt, "response weight": self.response}
        named.update({f"weight of role {r!r}": w for r, w in self.roles.items()})
        for name, w in named.items():
            if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {w!r}")
        unknown = set(self.roles) - set(TOKEN_ROLES)
        if unknown:
            raise ConfigError(f"unknown roles {sorted(unknown)} in role weights; valid roles: {list(TOKEN_ROLES)}")
        if self.prompt == 0 and self.response == 0 and not any(w > 0 for w in self.roles.values()):
            raise ConfigError(
                "prompt and response weights are both zero: no token would be trained "
                "(set response_weight > 0, e.g. 1 for conventional instruction tuning)"
            )

    def for_segment(self, role: str, is_response: bool) -> float:
        if role in self.roles:
            return float(self.roles[role])
        return float(self.response if is_response else self.prompt)


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
            raise ConfigError(f"{name} must be a finite number >= 0, got {w!r}")
        if w > 1:
            if not allow_above_one:
                raise ConfigError(f"{name} is {w:g}, above the papers' range [0, 1]; if you mean it, {hint}")
            warnings.append(f"{name} is {w:g}, above the papers' range [0, 1] (allowed by request)")
    return warnings
