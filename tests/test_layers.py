"""Import rules between `gateway/` packages: each imports only from its own layer or below
(config at the bottom, then the pure core, ... up to the command line), there are no import
cycles, and `gateway.stdio` (process management) never reaches up into the web side."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"

LAYERS = {
    "__init__": 0,
    "config": 0,
    # the pure core
    "errors": 1,
    "jsonrpc": 1,
    "mcp_methods": 1,
    "mcp_request": 1,
    "observability": 1,
    # token checks, policy decisions, state
    "auth": 2,
    "policy": 2,
    "store": 2,
    # protocols and upstream connections built on them
    "oauth": 3,
    "proxy": 3,
    "session": 3,
    "compiler": 3,
    "audit": 3,
    "upstream_auth": 3,
    "stdio": 3,
    # the HTTP side, then the command line
    "web": 4,
    "cli": 5,
    "__main__": 5,
}
"""Package (or top-level module) of `gateway/` -> its layer: imports go to the same or lower."""


def _package(module: str) -> str | None:
    """`gateway.web.app` -> `web`; a top-level module (`gateway.errors`) is its own unit."""
    parts = module.split(".")
    if parts[0] != "gateway" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> set[str]:
    """Every `gateway.*` module the file imports, at any depth (type-only imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("gateway.")}


def _unit(path: Path) -> str:
    relative = path.relative_to(GATEWAY)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def package_graph() -> dict[str, set[str]]:
    """importer unit -> imported units (the packages and top-level modules of `gateway/`)."""
    units = {_unit(path) for path in GATEWAY.rglob("*.py")}
    graph: dict[str, set[str]] = {unit: set() for unit in units}
    for path in GATEWAY.rglob("*.py"):
        importer = _unit(path)
        for module in _imports(path):
            imported = _package(module)
            if imported in units and imported != importer:
                graph[importer].add(imported)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in the graph, as a path that ends where it starts, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_every_package_has_a_layer() -> None:
    assert set(package_graph()) == set(LAYERS)


def test_no_upward_imports() -> None:
    graph = package_graph()
    upward = {
        (importer, imported)
        for importer, targets in graph.items()
        for imported in targets
        if LAYERS[imported] > LAYERS[importer]
    }
    assert upward == set()


def test_no_import_cycle_between_gateway_packages() -> None:
    assert _cycle(package_graph()) is None


@pytest.mark.parametrize("path", sorted((GATEWAY / "stdio").glob("*.py")), ids=lambda p: p.name)
def test_stdio_manages_processes_only(path: Path) -> None:
    modules = _imports(path)
    assert {m for m in modules if _package(m) == "web"} == set()
    text = path.read_text(encoding="utf-8")
    assert "aiohttp" not in text


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        pytest.param({"a": {"b"}, "b": set()}, None, id="a-chain"),
        pytest.param({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"], id="two-packages"),
        pytest.param(
            {"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"], id="three-packages"
        ),
    ],
)
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], cycle: list[str] | None) -> None:
    assert _cycle(graph) == cycle
