"""Read YAML config files strictly: a key given twice in one mapping is an error, not "last one wins".

PyYAML's SafeLoader silently keeps the last of two equal keys, so a config holding `prompt_weight: 0.1` and
further down `prompt_weight: 0.9` trained with 0.9 and said nothing. Every YAML file witune reads goes through
:func:`load_yaml_file` (or :func:`load_yaml_text`), whose errors are one `ConfigError` line with file and line.

Aliases are bounded too: `*ref` shares a node, so nine nested levels of nine references each (a 500-byte
"billion laughs" file) stand for 9**9 values that any code walking them (or an error message formatting them)
expands. The composed node graph is measured before anything is constructed, and a document that expands to
more than `MAX_EXPANDED_NODES` nodes is refused, naming the line of the top-level key that holds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from witune.errors import ConfigError

# Far above any real config (the largest, a full sweep, has a few hundred nodes), far below a slow expansion.
MAX_EXPANDED_NODES = 100_000


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping holding the same key twice (naming the key and its second line) and a
    document whose aliases expand beyond `MAX_EXPANDED_NODES` (checked on the composed nodes, before any value
    is built)."""

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it below with its own message
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (first given on line {first})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, UniqueKeyLoader.construct_mapping)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph that expands (every alias followed) to more than MAX_EXPANDED_NODES nodes, or that
    refers to itself. Sizes are memoised per node: the check is linear in the nodes actually written."""
    sizes: dict[int, int] = {}  # id(node) -> expanded size; 0 while it is being measured

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known == 0:
            raise _alias_error(node, "refers to itself")
        if known is None:
            sizes[id(node)] = 0
            children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
            children = list(node.value) if isinstance(node, yaml.SequenceNode) else children
            known = sizes[id(node)] = 1 + sum(size(c) for c in children)
        return known

    total = 1
    for key_node, value_node in root.value if isinstance(root, yaml.MappingNode) else [(root, None)]:
        total += size(key_node) + (size(value_node) if value_node is not None else 0)
        if total > MAX_EXPANDED_NODES:  # per top-level key, so that the error names the key's line
            raise _alias_error(key_node, f"expands its aliases (*name) to more than {MAX_EXPANDED_NODES} values")


def _alias_error(node: yaml.Node, what: str) -> yaml.YAMLError:
    # The message names a line, never the value: formatting an expanded alias bomb is the attack itself.
    return yaml.constructor.ConstructorError(None, None, f"this value {what}", node.start_mark)


def load_yaml_text(text: str, where: str) -> Any:
    """Parse YAML text; any error is a ConfigError naming `where`, the line and the problem."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where}{line}: invalid YAML ({getattr(e, 'problem', None) or e})") from None


def load_yaml_file(path: str | Path) -> Any:
    """Read and parse a YAML file: missing file, non-UTF-8 bytes, bad syntax or duplicate keys -> ConfigError."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8-sig")  # a BOM written by a Windows editor is fine
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{p}, line {line}: not UTF-8 text (byte {raw[e.start : e.start + 1]!r}); save the config as UTF-8"
        ) from None
    return load_yaml_text(text, str(p))


def key_lines(path: str | Path) -> dict[str, int]:
    """{top-level key: its 1-based line} of a YAML mapping file, for errors about a key's value."""
    try:
        node = yaml.compose(Path(path).read_text(encoding="utf-8-sig"), Loader=UniqueKeyLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): k.start_mark.line + 1 for k, _ in node.value}
