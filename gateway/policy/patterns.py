"""Name patterns in policies: `*` (any run of characters, also empty) and `?` (one character).

Precedence: an exact name beats every pattern; among patterns, the one with more literal
characters wins. Two patterns with equally many literal characters that could match the same
name are ambiguous and refused when the policy loads (`overlap`).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from functools import cached_property

WILDCARDS = frozenset("*?")


def is_pattern(text: str) -> bool:
    return any(ch in WILDCARDS for ch in text)


@dataclass(frozen=True)
class Pattern:
    text: str

    @cached_property
    def specificity(self) -> int:
        """Number of literal characters: the more, the more specific."""
        return sum(ch not in WILDCARDS for ch in self.text)

    @cached_property
    def regex(self) -> re.Pattern[str]:
        parts = ("." if ch == "?" else ".*" if ch == "*" else re.escape(ch) for ch in self.text)
        return re.compile("".join(parts), re.DOTALL)

    def matches(self, name: str) -> bool:
        return self.regex.fullmatch(name) is not None


def overlap(a: str, b: str) -> bool:
    """True if some string matches both glob `a` and glob `b` (product-automaton search)."""
    start = (0, 0)
    seen = {start}
    queue = deque([start])
    while queue:
        i, j = queue.popleft()
        if i == len(a) and j == len(b):
            return True
        moves = []
        if i < len(a) and a[i] == "*":
            moves.append((i + 1, j))  # a's star matches nothing more
        if j < len(b) and b[j] == "*":
            moves.append((i, j + 1))
        if i < len(a) and j < len(b):
            ca, cb = a[i], b[j]
            if ca in WILDCARDS or cb in WILDCARDS or ca == cb:  # one shared character
                moves.append((i if ca == "*" else i + 1, j if cb == "*" else j + 1))
        for move in moves:
            if move not in seen:
                seen.add(move)
                queue.append(move)
    return False
