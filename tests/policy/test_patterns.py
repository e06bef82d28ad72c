from __future__ import annotations

import pytest

from gateway.policy.patterns import Pattern, overlap


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("delete_*", "*_file", True),
        ("read_*", "write_*", False),
        ("a?c", "abc", True),
        ("a*", "b*", False),
        ("*x", "*y", False),
        ("*", "", True),
        ("a*b*c", "*bc", True),
        ("ab*", "*ba", True),
        ("file:///a/*", "file:///b/*", False),
    ],
    ids=lambda value: str(value),
)
def test_overlap(a: str, b: str, expected: bool) -> None:
    assert overlap(a, b) is expected
    assert overlap(b, a) is expected


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("delete_*", "delete_", True),
        ("delete_*", "undelete_x", False),
        ("a?c", "abbc", False),
        ("file:///p/*", "file:///p/x/y", True),
        ("a.b", "axb", False),
    ],
    ids=["star-empty", "anchored", "question-one-char", "star-crosses-slash", "dot-literal"],
)
def test_matches(pattern: str, name: str, matches: bool) -> None:
    assert Pattern(pattern).matches(name) is matches
