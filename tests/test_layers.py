"""Imports point down: every witune module imports only its own layer or the layers below it, and the modules
of one package import each other without a circle.

Parsed with `ast` (function-level imports included), so an upward import hidden inside a function
is found too. Layer order (bottom first), as ARCHITECTURE.md states it.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "witune"

# One list per layer, bottom first; a package may import its own layer and every layer below.
LAYERS: list[set[str]] = [
    {"errors", "shared_data", "atomic", "yaml_io", "flat_config", "plotting", "results_schema"},
    {"loss"},
    {"data"},
    {"models"},
    {"stats", "train", "eval", "integrations", "dpo"},
    {"sweep"},
    {"analysis"},
    {"report"},
    {"workflows"},
    {"cli"},
]

# Packages of one layer do not import each other, except these pairs (importer, imported), each for a reason:
ALLOWED_SAME_LAYER: dict[tuple[str, str], str] = {
    ("dpo", "train"): "DPO continues a `witune train` run: its config helpers, run folder and checkpoints",
    ("dpo", "eval"): "self-play preference pairs are generated with eval's greedy generation",
}


def _layer(package: str) -> int:
    for index, names in enumerate(LAYERS):
        if package in names:
            return index
    raise AssertionError(f"package {package!r} has no layer in tests/test_layers.py")


def _package_of(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def _imported_witune_packages(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(text, filename=str(path))
    module_parts = path.relative_to(SRC).with_suffix("").parts
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "witune" and len(parts) > 1:
                    found.append((node.lineno, parts[1]))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # Relative import: resolve against this module's package.
                base = list(module_parts[:-1])
                base = base[: len(base) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
                if target:
                    found.append((node.lineno, target[0]))
                else:
                    found.extend((node.lineno, alias.name) for alias in node.names)
            elif node.module:
                parts = node.module.split(".")
                if parts[0] == "witune":
                    if len(parts) > 1:
                        found.append((node.lineno, parts[1]))
                    else:
                        found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def _violations(extra: dict[Path, str] | None = None) -> list[str]:
    problems: list[str] = []
    extra = extra or {}
    for path in [*sorted(SRC.rglob("*.py")), *extra]:
        if path.parent == SRC and path.name == "__init__.py":
            continue  # the top-level package only names the version
        own = _package_of(path)
        own_layer = _layer(own)
        for lineno, target in _imported_witune_packages(path, extra.get(path)):
            if target == own or target == "__version__":
                continue
            target_layer = _layer(target)
            where = f"{path.relative_to(SRC.parent)}:{lineno}"
            if target_layer > own_layer:
                problems.append(f"{where}: {own} imports {target} (a higher layer)")
            # Layer 0 excepted: the bottom utilities may use each other (atomic and yaml_io raise errors' types).
            elif target_layer == own_layer > 0 and (own, target) not in ALLOWED_SAME_LAYER:
                problems.append(f"{where}: {own} imports {target} (same layer, not in ALLOWED_SAME_LAYER)")
    return problems


def test_every_import_points_down() -> None:
    problems = _violations()
    assert not problems, "imports that point up:\n" + "\n".join(problems)


def test_checker_sees_function_level_imports() -> None:
    # The checker must find an import hidden inside a function, or the test above proves nothing.
    module = SRC / "loss" / "weighted.py"
    tree_imports = _imported_witune_packages(module)
    assert all(_layer(target) <= _layer("loss") for _, target in tree_imports)
    probe = SRC / "loss" / "_layers_probe.py"  # never written: its text is handed to the checker
    problems = _violations({probe: "def f():\n    from witune.analysis import results\n"})
    assert any("loss imports analysis" in p for p in problems)
    sideways = SRC / "stats" / "_layers_probe.py"
    assert any("stats imports train" in p for p in _violations({sideways: "import witune.train.config\n"}))


# Import circles inside a package that are known and being removed (each with who removes it); nothing else.
# (The analysis gam/plw/r_engine circle was removed by the one engine interface, issue 25.)
ALLOWED_CIRCLES: dict[frozenset[str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_graph(extra: dict[Path, str] | None = None) -> dict[str, set[str]]:
    """{module: the witune modules of its own package it imports}, function-level imports included."""
    extra = extra or {}
    paths = {_module_name(p): p for p in [*SRC.rglob("*.py"), *extra]}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        text = extra.get(path) or path.read_text(encoding="utf-8")
        package = name.split(".")[:2]
        found: set[str] = set()
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in paths}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"  # `from witune.sweep import db` imports the module db
                    found.add(sub if sub in paths else node.module)
        graph[name] = {m for m in found if m in paths and m.split(".")[:2] == package and m != name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. the import circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles_inside_a_package() -> None:
    circles = [sorted(c) for c in _circles(_module_graph()) if c not in ALLOWED_CIRCLES]
    assert not circles, f"import circles inside a package: {circles}"


def test_every_allowed_circle_still_exists() -> None:
    """An allowance outlives its circle silently otherwise, and would let that circle come back unnoticed."""
    found = {frozenset(c) for c in _circles(_module_graph())}
    assert not [sorted(c) for c in ALLOWED_CIRCLES if c not in found]


def test_circle_checker_finds_a_circle() -> None:
    # dpo_stage <-> runner was such a circle (private names imported across): the checker must see one.
    probe = SRC / "sweep" / "_circle_probe.py"  # never written: its text is handed to the checker
    graph = _module_graph({probe: "def f():\n    from witune.sweep.runner import run_point\n"})
    graph["witune.sweep.runner"].add("witune.sweep._circle_probe")
    assert frozenset({"witune.sweep._circle_probe", "witune.sweep.runner"}) in _circles(graph)
