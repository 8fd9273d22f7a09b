"""The package's layers: no import cycle between its parts, and no part importing one above it.

Imports inside functions count too: a lazy import is still a dependency, and
the cycles this test was written against were all lazy ones.
"""

from __future__ import annotations

import ast
from collections import defaultdict

from ..conftest import ROOT

PACKAGE = ROOT / "napari_cancerseg"

#: Lowest first (DESIGN.md and docs/architecture.md): a part may import only parts before it.
LAYERS = [
    ("__init__", "errors", "classes", "processes"),
    ("annotations",),
    ("io",),
    ("preprocess",),
    ("models",),
    ("inference",),
    ("training",),
    ("correction", "grading"),
    ("evaluation",),
    ("_reader", "_writer", "_sample_data", "widgets", "headless"),
    ("cli",),
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def _module_name(path) -> tuple[str, bool]:
    relative = path.relative_to(PACKAGE).with_suffix("")
    is_package = relative.name == "__init__"
    parts = ("napari_cancerseg", *relative.parts[:-1]) if is_package else ("napari_cancerseg", *relative.parts)
    return ".".join(parts), is_package


def _part(module: str) -> str:
    """The top-level part of a module of this package ('napari_cancerseg.io.wsi' -> 'io')."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    name = parts[1]
    return name if (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file() else "__init__"


def import_edges() -> dict[str, set[tuple[str, str]]]:
    """part -> {(imported part, file:line)} over every import statement, function bodies included."""
    edges: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        module, is_package = _module_name(path)
        source = _part(module + ".x") if is_package else _part(module)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                    prefix = ".".join(base)
                    targets = [f"{prefix}.{node.module}"] if node.module else [f"{prefix}.{a.name}" for a in node.names]
                else:
                    targets = [node.module or ""]
            else:
                continue
            for target in targets:
                if target == "napari_cancerseg" or target.startswith("napari_cancerseg."):
                    imported = _part(target)
                    if imported != source:
                        edges[source].add((imported, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return edges


def strongly_connected(edges: dict[str, set[tuple[str, str]]]) -> list[set[str]]:
    """Tarjan's strongly connected components with more than one part."""
    graph = {s: {d for d, _ in targets} for s, targets in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(set(graph) | {d for targets in graph.values() for d in targets}):
        if node not in index:
            visit(node)
    return components


def test_the_cycle_finder_finds_a_cycle():
    """The checker itself can fail: a made-up lazy import from io back up to inference is a cycle."""
    edges = import_edges()
    edges["io"].add(("inference", "made up"))
    assert any({"io", "inference"} <= component for component in strongly_connected(edges))


def test_no_import_cycle_between_the_packages_parts():
    assert strongly_connected(import_edges()) == []


def test_every_part_is_placed_and_imports_only_parts_below_it():
    edges = import_edges()
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert parts - set(RANK) == set(), "place new parts in LAYERS"
    upward = sorted(f"{where}: {source} imports {target}" for source, targets in edges.items()
                    for target, where in targets if RANK[target] > RANK[source])
    assert upward == []
