"""Grant rules: which scopes a signed-in user may have, from the user's claims."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.policy.grants import Grants, rule
from gateway.policy.scopes import ScopeImplications

GRANTS = Grants(
    [
        rule({"groups": ["eng"]}, ["files:read", "files:write"]),
        rule({"groups": ["admins"], "email_verified": [True]}, ["files:admin"]),
        rule({"level": [3]}, ["reports:read"]),
        rule({}, ["mcp:tools"]),
    ],
    ScopeImplications({"files:admin": ["files:write"], "files:write": ["files:read"]}),
)
ALL = frozenset({"files:read", "files:write", "files:admin", "reports:read", "mcp:tools"})


@pytest.mark.parametrize(
    ("claims", "ceiling"),
    [
        ({}, {"mcp:tools"}),
        ({"groups": ["eng"]}, {"files:read", "files:write", "mcp:tools"}),
        ({"groups": "eng"}, {"files:read", "files:write", "mcp:tools"}),
        ({"groups": ["sales", "eng"]}, {"files:read", "files:write", "mcp:tools"}),
        ({"groups": ["engineering"]}, {"mcp:tools"}),
        ({"groups": ["ENG"]}, {"mcp:tools"}),
        (
            {"groups": ["admins"], "email_verified": True},
            {"files:admin", "files:write", "files:read", "mcp:tools"},
        ),
        ({"groups": ["admins"], "email_verified": False}, {"mcp:tools"}),
        ({"groups": ["admins"]}, {"mcp:tools"}),
        ({"groups": ["admins"], "email_verified": "true"}, {"mcp:tools"}),
        ({"groups": ["admins"], "email_verified": 1}, {"mcp:tools"}),
        ({"level": 3}, {"reports:read", "mcp:tools"}),
        ({"level": True}, {"mcp:tools"}),
        ({"groups": [["eng"]]}, {"mcp:tools"}),
        ({"groups": {"eng": True}}, {"mcp:tools"}),
    ],
    ids=[
        "no-claims",
        "group-list",
        "group-string",
        "one-of-several",
        "no-prefix-match",
        "case-sensitive",
        "all-conditions",
        "one-condition-fails",
        "condition-missing",
        "string-is-not-bool",
        "number-is-not-bool",
        "number",
        "bool-is-not-number",
        "nested-list",
        "object",
    ],
)
def test_ceiling(claims: dict[str, Any], ceiling: set[str]) -> None:
    assert GRANTS.ceiling(claims) == ceiling


def test_a_request_gets_what_it_asks_within_the_ceiling_never_more() -> None:
    eng = {"groups": ["eng"]}
    assert GRANTS.grant(eng, frozenset({"files:read"})) == {"files:read"}
    assert GRANTS.grant(eng, ALL) == {"files:read", "files:write", "mcp:tools"}
    assert GRANTS.grant({}, frozenset({"files:write"})) == frozenset()


def test_no_rules_grant_nothing() -> None:
    assert Grants([], ScopeImplications({})).ceiling({"groups": ["eng"]}) == frozenset()
