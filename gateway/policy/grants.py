"""Which scopes a signed-in user may be granted: YAML rules over the user's claims.

    grants:
      - {when: {groups: [eng]}, scopes: [files:read, files:write]}
      - {when: {email_verified: [true]}, scopes: [mcp:tools]}
      - {scopes: [mcp:tools]}                 # everyone who can sign in

A rule applies when, for every claim it names, the user's claim (a string, number, boolean or a
list of them) shares at least one value with the rule's list. The user may be granted the
scopes of every rule that applies, and everything those imply (`scopes.implies`); a request
gets the requested scopes within that ceiling, never more. Nothing matches by default: a user no
rule applies to is granted nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.policy.scopes import ScopeImplications

ATTAINABLE_SCOPE_CLAIM = "attainable_scope"
"""A private claim of the gateway's access tokens: every scope of the token's resource this user
could be granted (space-separated, like `scope`), computed from the rules at issue time. Routes
read it to list what the caller could step up to, without asking the provider again; it is
believed only in tokens the gateway signed."""

ClaimValue = str | int | float | bool
TypedValue = tuple[bool, ClaimValue]
"""A claim value with whether it is a boolean: `True` must not equal `1`."""


@dataclass(frozen=True, slots=True)
class GrantRule:
    when: Mapping[str, frozenset[TypedValue]]
    """Claim name -> accepted values (any one of them); empty: every user."""
    scopes: frozenset[str]

    def applies_to(self, claims: Mapping[str, Any]) -> bool:
        return all(_values(claims.get(name)) & accepted for name, accepted in self.when.items())


def _values(claim: Any) -> frozenset[TypedValue]:
    """A claim as a set of scalar values; anything else (objects, nested lists) matches nothing.

    Booleans are kept apart from numbers (`True` is not `1`), by pairing each value with its
    type: a rule for `[1]` never matches a claim `true`.
    """
    items: Iterable[Any] = claim if isinstance(claim, list) else (claim,)
    return frozenset(_typed(item) for item in items if isinstance(item, str | int | float | bool))


def _typed(value: ClaimValue) -> TypedValue:
    return (type(value) is bool, value)


def rule(when: Mapping[str, Sequence[ClaimValue]], scopes: Iterable[str]) -> GrantRule:
    """A rule from its configured form."""
    return GrantRule(
        {name: frozenset(_typed(v) for v in values) for name, values in when.items()},
        frozenset(scopes),
    )


class Grants:
    """The configured rules with the scope implication relation."""

    def __init__(self, rules: Sequence[GrantRule], implications: ScopeImplications) -> None:
        self._rules = tuple(rules)
        self._implications = implications

    def ceiling(self, claims: Mapping[str, Any]) -> frozenset[str]:
        """Every scope this user may be granted."""
        granted: set[str] = set()
        for grant in self._rules:
            if grant.applies_to(claims):
                granted |= grant.scopes
        return self._implications.expand(frozenset(granted))

    def grant(self, claims: Mapping[str, Any], requested: frozenset[str]) -> frozenset[str]:
        """The requested scopes this user may have (possibly fewer than requested, or none)."""
        return requested & self.ceiling(claims)
