"""Who is calling: the identity a validated access token stands for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, as (issuer, subject, client_id) plus the scopes the token grants.

    `subject` or `client_id` may be None when the token does not carry them; code that binds
    state to a principal compares all three, so a missing `sub` never widens a binding.
    """

    issuer: str
    subject: str | None
    client_id: str | None
    scopes: frozenset[str]
    expires_at: float
    token_id: str | None = None
    """The token's `jti`, for revocation checks of tokens the gateway minted itself."""
    claims: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False
    )
    """All of the token's claims (or the introspection answer), read-only: for list visibility
    (`gateway.policy.visibility`), never for identity comparisons."""
