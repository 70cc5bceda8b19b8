"""The package's imports flow one way: no module imports, directly or through others, a module
that imports it back (lazy imports inside functions count too: they form the same knot)."""

from __future__ import annotations

import ast
import pathlib

import pyrnn_fast as prf

PACKAGE = pathlib.Path(prf.__file__).resolve().parent  # the installed package


def _module_name(path: pathlib.Path) -> str:
    parts = ["pyrnn_fast", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: pathlib.Path = PACKAGE) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, from every import statement in its source.

    ``from .x import y`` is an edge to ``x.y`` when that is a module, else to ``x``. Parent
    packages that Python imports on the way are not edges (every module would then "import"
    ``pyrnn_fast/__init__``), only what the source names."""
    files = {_module_name(p): p for p in sorted(root.rglob("*.py"))}
    packages = {name for name, p in files.items() if p.name == "__init__.py"}
    graph = {}
    for name, path in files.items():
        here = name if name in packages else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in files and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert "pyrnn_fast._api" in graph["pyrnn_fast"]  # __init__ re-exports the functional API
    assert "pyrnn_fast._backends" in graph["pyrnn_fast._api"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
