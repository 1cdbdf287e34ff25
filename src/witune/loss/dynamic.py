"""Dynamic token weights: a detached per-token factor f_t on top of the static weight w_t.

    L = sum_t w_t * f_t * nll_t / Z,   f_t computed from the model's own prediction, with no gradient through it

The static weights (lambda_p, lambda_r, per-role, per-message, per-sample, span weights) come from the data as
`weights`; a `DynamicWeight` multiplies them, token by token, inside every loss path: the logits path
(`weighted_nll`), the loss from hidden states (`weighted_nll_from_hidden`, no logits tensor) and TRL's fused
log-probabilities (`witune.integrations.trl`). The loops never look inside a rule: they hand it to the loss.

One interface, three hooks, none of them in the loop:
- `factor(stats)`: the factor of each row from `TokenStats` (its nll, its entropy when `needs_entropy`, and a
  per-token side input when the rule provides one);
- `side_input(inputs, labels)`: called once per micro-batch with the model inputs and the labels aligned with
  the loss rows, e.g. to run a frozen reference model (Rho-1's excess loss); None by default;
- `needs_entropy`: the loss computes each row's entropy (one more pass over the chunk) only for such rules.

The factor must be per token. A selection over the whole batch (Rho-1 keeps the top k% of tokens by excess
loss) depends on how the step is split into micro-batches and processes, so it is written here as a threshold
on the token's own excess loss; the step then stays the same for any split.

Normaliser: the step normaliser Z is counted from labels and static weights before any forward pass (that is
what makes a step independent of its split), so a dynamic factor never enters Z: every rule keeps the static
normaliser the user chose. DFT's paper ("On the Generalization of SFT", arXiv 2508.05629) averages
sg(p_t) * (-log p_t) over the response tokens: that is `nonzero` at (0, 1), and it is TRL's `loss_type="dft"`
(which divides by the count of labels, i.e. nonzero). Dividing by sum(w_t * f_t) instead would undo the
down-weighting the rule is for (a batch of confident tokens would be scaled back up).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from witune.errors import ConfigError


@dataclass(frozen=True)
class TokenStats:
    """What a rule may read about the rows of one chunk; all detached, fp32, one value per row."""

    nll: Tensor  # -log p(label)
    entropy: Tensor | None = None  # entropy of the row's next-token distribution (only when needs_entropy)
    side: Tensor | None = None  # the rule's own per-token input (from side_input), None when it has none


class DynamicWeight(ABC):
    """A per-token factor f_t >= 0 multiplying the static weight; never differentiated (see the module docstring)."""

    name: ClassVar[str]
    needs_entropy: ClassVar[bool] = False

    @abstractmethod
    def factor(self, stats: TokenStats) -> Tensor:
        """f_t for each row of `stats` (same shape as stats.nll)."""

    def side_input(self, inputs: Mapping[str, Tensor], labels: Tensor) -> Tensor | None:
        """A per-token tensor aligned with `labels` (the labels of the loss rows, shifted once: label of row t is
        the token predicted there, -100 where there is none), or None. Called once per micro-batch, under no grad."""
        return None


class DFT(DynamicWeight):
    """Dynamic fine-tuning: f_t = p_t = exp(-nll_t), the model's detached probability of the label.

    The gradient of p_t * (-log p_t) with p_t held fixed is p_t times the NLL gradient: the token's share of the
    update shrinks as the model grows sure of it (arXiv 2508.05629; TRL's loss_type="dft")."""

    name = "dft"

    def factor(self, stats: TokenStats) -> Tensor:
        return torch.exp(-stats.nll)


DYNAMIC_WEIGHTS: dict[str, type[DynamicWeight]] = {"dft": DFT}


def register_dynamic_weight(cls: type[DynamicWeight]) -> type[DynamicWeight]:
    """Make a rule available by its `name` (config key `dynamic_weight`, `--dynamic-weight`); usable as a decorator."""
    DYNAMIC_WEIGHTS[cls.name] = cls
    return cls


def dynamic_weight(spec: str | DynamicWeight | None, args: Mapping[str, Any] | None = None) -> DynamicWeight | None:
    """None / "none" -> None; a registered name or a component path "package.module:Class" (a `DynamicWeight`
    subclass in code of your own, imported here: what a config names, so that `witune train`, every sweep point
    and a resumed run build the same rule in their own process) -> that rule, built with the keyword `args`; a
    rule -> itself. Anything else: ConfigError, in one line naming what is wrong.

    >>> type(dynamic_weight("witune.loss.dynamic:DFT")).__name__
    'DFT'
    """
    if spec is None or isinstance(spec, DynamicWeight):
        if args:
            raise ConfigError(f"dynamic_weight_args {dict(args)} given without a dynamic weight to build")
        return spec
    if isinstance(spec, str):
        if spec == "none" and not args:
            return None
        cls = DYNAMIC_WEIGHTS.get(spec) or (component(spec) if ":" in spec else None)
        if cls is not None:
            try:
                return cls(**dict(args or {}))
            except TypeError as e:
                raise ConfigError(f"dynamic weight {spec!r}: cannot be built with {dict(args or {})}: {e}") from None
    raise ConfigError(
        f"dynamic weight must be 'none' or one of {sorted(DYNAMIC_WEIGHTS)}, got {spec!r} (or a rule of your own: "
        "'package.module:Class')"
    )


def component(path: str) -> type[DynamicWeight]:
    """The `DynamicWeight` subclass named "package.module:Class" (imported; ConfigError in one line otherwise)."""
    import importlib

    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except ImportError as e:
        raise ConfigError(f"dynamic weight {path!r}: module {module_name!r} cannot be imported ({e})") from None
    except AttributeError:
        raise ConfigError(f"dynamic weight {path!r}: {module_name} has no {attr!r}") from None
    if not (isinstance(obj, type) and issubclass(obj, DynamicWeight)):
        raise ConfigError(f"dynamic weight {path!r} is not a witune.loss.DynamicWeight subclass")
    return obj


def row_factor(rule: DynamicWeight, nll: Tensor, entropy: Tensor | None, side: Tensor | None) -> Tensor:
    """The rule's factors for rows with these stats, checked: finite and >= 0 (a NaN would poison the step)."""
    f = rule.factor(TokenStats(nll.detach().float(), None if entropy is None else entropy.detach().float(), side))
    f = f.detach().to(torch.float32)
    if f.shape != nll.shape:
        raise ValueError(f"dynamic weight {rule.name!r} returned shape {tuple(f.shape)} for {tuple(nll.shape)} rows")
    if not bool(((f >= 0) & torch.isfinite(f)).all()):
        raise ValueError(f"dynamic weight {rule.name!r} returned a negative or non-finite factor")
    return f
