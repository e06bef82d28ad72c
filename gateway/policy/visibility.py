"""What a list shows one caller: held, attainable, or hidden (pure, no I/O).

A host that offers its model only the tools it was shown can step up only to a tool it was
shown. So lists show what the caller's token may use (held) and, by `list_visibility`, also
what the caller could be granted (attainable) or everything; an entry shown but not held is
annotated with the scopes it needs (`REQUIRED_SCOPES_META`), so a host can say "needs
files:write" and a client can ask for it before calling. What a `deny` rule covers is never
shown: no scope unlocks it.

Who could be granted what:
- tokens the gateway minted (facade mode) carry the user's ceiling, computed from the grant
  rules at issue time, in the private claim `ATTAINABLE_SCOPE_CLAIM`;
- tokens of another authorization server: every scope, unless the route's `attainable` rules
  narrow it by the token's claims.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from gateway.policy.grants import ATTAINABLE_SCOPE_CLAIM, Grants
from gateway.policy.scopes import ScopeImplications

ListVisibility = Literal["attainable", "held", "all"]
REQUIRED_SCOPES_META: Final = "io.mcp-auth-gateway/requiredScopes"
"""The `_meta` key of a listed entry the caller does not hold: the scopes it needs, sorted."""


@dataclass(frozen=True, slots=True)
class Held:
    """Shown as it is: the caller's token may use it."""

    rule: str


@dataclass(frozen=True, slots=True)
class Attainable:
    """Shown and annotated with `required`: the caller could be granted it (step-up)."""

    required: frozenset[str]
    rule: str


@dataclass(frozen=True, slots=True)
class Hidden:
    rule: str
    reason: Literal["denied", "not_held", "not_attainable"]


Listing = Held | Attainable | Hidden


class Ceilings:
    """The scopes a caller could be granted on one route, from its token.

    `own_issuer`: the gateway's issuer in facade mode (its tokens carry their ceiling), else
    None. `rules`: the route's `attainable` rules for other issuers' tokens (None: no limit).
    """

    def __init__(
        self,
        own_issuer: str | None,
        rules: Grants | None,
        implications: ScopeImplications,
    ) -> None:
        self._own_issuer = own_issuer
        self._rules = rules
        self._implications = implications

    def of(self, issuer: str, claims: Mapping[str, Any]) -> frozenset[str] | None:
        """Every scope this token's caller could be granted; None: no limit is known."""
        if self._own_issuer is not None and issuer == self._own_issuer:
            carried = claims.get(ATTAINABLE_SCOPE_CLAIM)
            scopes = frozenset(carried.split()) if isinstance(carried, str) else frozenset()
            return self._implications.expand(scopes)  # a token without it: what it holds
        if self._rules is None:
            return None
        return self._rules.ceiling(claims)
