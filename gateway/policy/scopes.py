"""Scope implication: `files:admin` implies `files:write` implies `files:read`.

The configured relation is closed transitively once, at load; cycles are refused. A token's
effective scopes are its granted scopes plus everything they imply, so a broader scope
satisfies a narrower requirement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class ScopeCycleError(ValueError):
    """The implication relation has a cycle (listed in `cycle`)."""

    def __init__(self, cycle: list[str]) -> None:
        super().__init__("scope implication cycle: " + " -> ".join(cycle))
        self.cycle = cycle


class ScopeImplications:
    def __init__(self, implies: Mapping[str, Iterable[str]]) -> None:
        graph = {scope: tuple(implied) for scope, implied in implies.items()}
        self._closure: dict[str, frozenset[str]] = {}
        for scope in graph:
            self._close(scope, graph, [])

    def _close(
        self, scope: str, graph: Mapping[str, tuple[str, ...]], path: list[str]
    ) -> frozenset[str]:
        if scope in path:
            raise ScopeCycleError([*path[path.index(scope) :], scope])
        if scope in self._closure:
            return self._closure[scope]
        implied: set[str] = set()
        for child in graph.get(scope, ()):
            implied.add(child)
            implied |= self._close(child, graph, [*path, scope])
        result = frozenset(implied)
        self._closure[scope] = result
        return result

    def expand(self, granted: frozenset[str]) -> frozenset[str]:
        """The granted scopes and every scope they imply."""
        closure = self._closure
        if not closure or not any(scope in closure for scope in granted):
            return granted
        effective = set(granted)
        for scope in granted:
            effective |= closure.get(scope, frozenset())
        return frozenset(effective)
