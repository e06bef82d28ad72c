"""Configuration problems: where each one is (YAML path and line), and which ones are worth saying.

Both loading passes (validating the document, then compiling it into runtime objects) report
into one `Problems`, so `check` lists everything in one run. A value the gateway could not know
(an unset `${VAR}`, a secret file it could not read) is reported once; what its empty stand-in
then breaks (a knock-on problem at the same place, below it, or a check of the section holding
it) is not reported again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from difflib import get_close_matches

YamlPath = tuple[str | int, ...]
"""A place in the document: `("upstreams", 1, "url")` is `upstreams[1].url`."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path} (line {self.line})" if self.line else self.path
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every problem found."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        super().__init__(f"{source}: {len(problems)} problem(s)")
        self.source = source
        self.problems = problems


def format_path(path: YamlPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """` (did you mean 'port'?)` when a known key is close to `key`, else nothing."""
    close = get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class Problems:
    """Every problem found so far, with lines from the document's line index."""

    source: str
    lines: dict[YamlPath, int] = field(default_factory=dict)
    unknown: set[YamlPath] = field(default_factory=set)
    """Values not known (unset variables, unread files): their knock-ons are not reported."""
    found: list[ConfigProblem] = field(default_factory=list)
    withheld: list[ConfigProblem] = field(default_factory=list)
    """Knock-on problems not reported (kept in case nothing else explains a failure)."""

    def add(
        self, path: YamlPath, message: str, *, knock_on_possible: bool = True, line: int = 0
    ) -> None:
        """Record a problem. `knock_on_possible`: it may follow from a value not known (a value
        check); structural problems (an unknown key, a missing one) never do. `line`: where,
        when the path does not say (a YAML syntax problem)."""
        problem = ConfigProblem(format_path(path), message, line or self.line_of(path))
        if knock_on_possible and self._follows_from_unknown(path):
            self.withheld.append(problem)
        elif problem not in self.found:
            self.found.append(problem)

    def unknown_value(self, path: YamlPath, message: str | None) -> None:
        """A value that could not be known; `message` says why (None: say nothing)."""
        if message is not None:
            self.add(path, message, knock_on_possible=False)
        self.unknown.add(path)

    def line_of(self, path: YamlPath) -> int | None:
        """The line of `path`, of its `_file` twin, or of the nearest enclosing key."""
        while path:
            if path in self.lines:
                return self.lines[path]
            last = path[-1]
            if isinstance(last, str) and (*path[:-1], f"{last}_file") in self.lines:
                return self.lines[(*path[:-1], f"{last}_file")]
            path = path[:-1]
        return None

    def _follows_from_unknown(self, path: YamlPath) -> bool:
        return any(
            path[: len(unknown)] == unknown or unknown[: len(path)] == path
            for unknown in self.unknown
        )

    def raise_if_any(self) -> None:
        if self.found:
            raise ConfigError(self.source, self.found)
