"""Flat dataclass configs: the one kernel behind `TrainConfig`, `DPOConfig` and `SweepConfig`.

A config is a dataclass deriving from `FlatConfig`, one docstring under every field (an attribute docstring,
as in litgpt). The kernel reads the docstrings with `ast` (so they are written once and feed `--help`,
`--print-config` and the example YAMLs), checks and converts every value to its field's type, checks the
ranges the class declares (`RANGES`, merged over its bases, plus `problems()` for what no range expresses),
and loads YAML (through `witune.yaml_io`: duplicate keys and alias bombs refused) and `--set key=value`
overrides. Resolution order, later wins: field defaults < preset < YAML file < `--set`.

Field groups shared by several configs (optimiser, LoRA, runtime: `witune.train.fields`) are dataclass
bases; a subclass re-declares a field to change its default or its docstring.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import yaml

from witune.errors import ConfigError
from witune.yaml_io import key_lines, load_yaml_file, load_yaml_text

# A range: the complaint about a value ("must be >= 1"), or None when the value is fine.
Range = Callable[[Any], "str | None"]
C = TypeVar("C", bound="FlatConfig")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def one_of(options: typing.Iterable[Any]) -> Range:
    choices = tuple(options)
    return lambda v: None if v in choices else f"must be one of {choices}"


def at_least(low: float, note: str = "") -> Range:
    """>= low (and finite); `note` says what the boundary means, e.g. "(0: no clipping)"."""
    suffix = f" {note}" if note else ""
    return lambda v: None if _finite(v) and v >= low else f"must be >= {low}{suffix}"


def above(low: float) -> Range:
    return lambda v: None if _finite(v) and v > low else f"must be a finite number > {low}"


def interval(low: float, high: float) -> Range:
    """low <= v < high."""
    return lambda v: None if _finite(v) and low <= v < high else f"must be in [{low}, {high})"


def optional(inner: Range) -> Range:
    """None, or a value `inner` accepts."""

    def check(v: Any) -> str | None:
        why = None if v is None else inner(v)
        return None if why is None else f"{why} or null"

    return check


def short(value: Any, width: int = 80) -> str:
    """repr(value), cut: an error message must never format a value of unbounded size."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


class ConfigKeyError(ConfigError):
    """A ConfigError about one key, so that the loader can say which file and line (or --set) gave it."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class FlatConfig:
    """Base of a flat config dataclass: see the module docstring."""

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    RANGES: ClassVar[Mapping[str, Range]] = {}
    # Stand-ins for required keys in a printed template (`--print-config` needs no data or model).
    TEMPLATE_VALUES: ClassVar[Mapping[str, Any]] = {}
    # Fields the code fills in, never a file or `--set` (the sweep's resolved base path).
    INTERNAL: ClassVar[tuple[str, ...]] = ()

    # --- checks
    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, what is wrong) for every value out of its range; subclasses add theirs (`yield from super()`)."""
        for key, check in ranges(type(self)).items():
            why = check(getattr(self, key))
            if why is not None:
                yield key, why

    def validate(self: C) -> C:
        """Raise a ConfigError naming the first key whose value is out of range."""
        for key, why in self.problems():
            raise ConfigKeyError(key, f"config key '{key}' {why}, got {short(getattr(self, key))}")
        return self

    # --- loading
    @classmethod
    def from_values(cls: type[C], values: Mapping[str, Any], where: str) -> C:
        """Build from plain values (unknown keys and wrong types refused, naming `where`); not validated."""
        return cls(**apply(cls, {}, values, where))

    @classmethod
    def load(
        cls: type[C],
        path: str | Path | None = None,
        overrides: list[str] | Mapping[str, Any] | None = None,
        preset: str | None = None,
        validate: bool = True,
        template: bool = False,
    ) -> C:
        """Defaults < preset < YAML at `path` < overrides; errors name the file and line or `--set`.
        `template`: required keys left empty get `TEMPLATE_VALUES` (for `--print-config`), the rest is checked."""
        file_values: dict[str, Any] = {}
        if path is not None:
            loaded = load_yaml_file(path)
            if loaded is not None and not isinstance(loaded, dict):
                raise ConfigError(f"{path}: expected a mapping of key: value at the top level")
            file_values = loaded or {}
        set_values = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
        chosen = set_values.get("preset") or preset or file_values.get("preset")
        values: dict[str, Any] = {}
        if chosen is not None:
            if chosen not in cls.PRESETS:
                raise ConfigError(f"unknown preset {short(chosen)}; choose one of {sorted(cls.PRESETS)}")
            values.update(cls.PRESETS[chosen])
        apply(cls, values, file_values, str(path))
        apply(cls, values, set_values, "--set")
        if "preset" in field_names(cls):
            values["preset"] = chosen
        if template:
            values.update({k: v for k, v in cls.TEMPLATE_VALUES.items() if not values.get(k)})
        config = cls(**values)
        if not validate:
            return config
        try:
            return config.validate()
        except ConfigError as e:
            key = getattr(e, "key", None)
            if key in set_values:
                raise ConfigError(f"--set {key}: {e}") from None
            if key in file_values and path is not None:
                line = key_lines(Path(path)).get(key)
                raise ConfigError(f"{path}{f', line {line}' if line else ''}: {e}") from None
            raise

    @classmethod
    def unknown_key_hint(cls, unknown: list[str]) -> str:
        """A hint appended to the unknown-key error (the sweep points training keys to `set:`)."""
        return ""

    # --- writing
    def to_yaml(self, comments: bool = True) -> str:
        """The config as YAML, every key preceded by its docstring as a comment (an annotated example)."""
        docs = field_docs(type(self))
        lines = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if comments:
                lines.append(f"# {docs.get(f.name, '')}")
            value = _plain(getattr(self, f.name))
            dumped = yaml.safe_dump({f.name: value}, default_flow_style=True, sort_keys=False, width=10_000).strip()
            lines.append(dumped[1:-1] if dumped.startswith("{") else dumped)  # flow style wraps in {...}
        return "\n".join(lines) + "\n"

    @classmethod
    def keys_help(cls) -> str:
        """The `--help` epilog: every key with its default and docstring, then the presets."""
        docs = field_docs(cls)
        lines = ["config keys (YAML or --set key=value; defaults in brackets):"]
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            factory = f.default_factory  # MISSING (not callable) for fields with a plain default
            default = f.default if f.default is not dataclasses.MISSING else factory() if callable(factory) else None
            lines.append(f"  {f.name} [{default!r}]: {docs.get(f.name, '')}")
        if cls.PRESETS:
            lines.append("presets: " + "; ".join(f"{k}: {dict(v)}" for k, v in cls.PRESETS.items()))
        return "\n".join(lines)


def _plain(value: Any) -> Any:
    """Tuples (weight pairs) as lists: safe_dump writes tuples as python/tuple tags no safe loader reads."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in getattr(cls, "INTERNAL", ())]


def ranges(cls: type) -> dict[str, Range]:
    """`RANGES` of the class and its bases (a subclass's entry wins)."""
    out: dict[str, Range] = {}
    for klass in reversed(cls.__mro__):
        out.update(klass.__dict__.get("RANGES", {}))
    return out


_DOCS: dict[type, dict[str, str]] = {}


def field_docs(cls: type) -> dict[str, str]:
    """{field name: its attribute docstring} over the class and its bases, read from their source with `ast`."""
    if cls not in _DOCS:
        docs: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            if not dataclasses.is_dataclass(klass):
                continue
            body = ast.parse(inspect.getsource(klass)).body[0].body  # type: ignore[attr-defined]
            for node, nxt in zip(body, body[1:]):
                if (
                    isinstance(node, ast.AnnAssign)
                    and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)
                ):
                    docs[node.target.id] = " ".join(nxt.value.value.split())
        _DOCS[cls] = docs
    return _DOCS[cls]


def apply(cls: type, values: dict[str, Any], updates: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Coerce `updates` into `values` (in place, also returned); unknown keys are refused, listing the valid."""
    valid = field_names(cls)
    unknown = [k for k in updates if k not in valid]
    if unknown:
        hint = cls.unknown_key_hint(unknown) if issubclass(cls, FlatConfig) else ""
        raise ConfigError(f"{where}: unknown key(s) {short(unknown)}{hint}; valid keys: {', '.join(valid)}")
    hints = typing.get_type_hints(cls, include_extras=True)
    for k, v in updates.items():
        values[k] = coerce(hints[k], k, v, where)
    return values


def coerce(hint: Any, key: str, value: Any, where: str) -> Any:
    """Check/convert one value to a field's type; errors name the key and where the value came from.

    Types: bool, int, float (YAML 1.1 reads '1e-5' as a string: accepted), str, `X | None`, dict[str, float],
    dict[str, Any], list[X] (a single value is a one-element list), tuple[float, float], and
    `Annotated[X, parser]`: the parser (raising ValueError with the complaint) converts the value.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        try:
            return args[1](value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: key '{key}' {e}, got {short(value)}") from None
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        return coerce(next(a for a in args if a is not type(None)), key, value, where)  # `X | None`: one X
    if value is None:
        raise ConfigError(f"{where}: key '{key}' cannot be null")
    bad = ConfigError(f"{where}: key '{key}' expects {_type_name(hint)}, got {short(value)}")
    if origin is list:
        items = value if isinstance(value, list) else [value]
        return [coerce(args[0], key, item, where) for item in items]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad
        return tuple(coerce(a, key, item, where) for a, item in zip(args, value))
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        if args[1] is Any:
            return dict(value)
        return {str(k): coerce(args[1], f"{key}.{k}", v, where) for k, v in value.items()}
    if hint is Any:
        return value
    scalar = _SCALARS.get(hint)
    converted = scalar(value) if scalar is not None else None
    if converted is None:
        raise bad
    return converted


def _to_float(v: Any) -> float | None:
    try:  # YAML 1.1 reads '1e-5' (no dot) as a string
        return float(v) if isinstance(v, (int, float, str)) and not isinstance(v, bool) else None
    except (ValueError, OverflowError):  # OverflowError: an int of hundreds of digits has no float
        return None


# type -> converter returning None for a value of the wrong type (a bool is not a number; 1.5 is not an int)
_SCALARS: dict[Any, Callable[[Any], Any]] = {
    bool: lambda v: v if isinstance(v, bool) else None,
    int: lambda v: (
        int(v)
        if not isinstance(v, bool) and (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))
        else None
    ),
    float: _to_float,
    str: lambda v: None if isinstance(v, (dict, list)) else str(v),
}


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def finite_number(value: Any) -> float:
    """A finite number (YAML reads .nan and .inf as floats: a NaN weight trains nothing without a word)."""
    number = _to_float(value)
    if number is None or not math.isfinite(number):
        raise ValueError("expects finite numbers")
    return number


FiniteFloat = Annotated[float, finite_number]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['lr=1e-4', 'role_weights={system: 0}'] -> dict; values are parsed as YAML scalars/mappings."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {short(item)}")
        try:
            out[key.strip()] = load_yaml_text(raw, "--set") if raw.strip() else None
        except ConfigError:
            out[key.strip()] = raw  # an unparsable value is taken as a plain string, then type-checked
    return out
