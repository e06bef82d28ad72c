"""Checks on an access token's claims, and the principal they describe.

RFC 9068 (JWT access tokens) section 4 and RFC 7519 section 4.1; the audience check is the
RFC 8707 binding of a token to this route's resource URL, compared exactly (no normalisation:
a trailing slash or a change of case is a different resource).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from gateway.auth.principal import Principal


class ClaimsError(ValueError):
    """A claim is missing or wrong; `reason` is a stable code for logs and metrics."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _number(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise ClaimsError(f"missing_{name}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClaimsError(f"invalid_{name}")
    return float(value)


def audiences(claims: Mapping[str, Any]) -> frozenset[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return frozenset({aud})
    if isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        return frozenset(aud)
    return frozenset()


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """`scope` (space-separated string, RFC 8693 section 4.2) or `scp` (list of strings)."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, list) and all(isinstance(s, str) for s in scp):
        return frozenset(scp)
    if isinstance(scp, str):
        return frozenset(scp.split())
    return frozenset()


def _optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ClaimsError(f"invalid_{name}")
    return value


def check_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    resource: str,
    now: float,
    leeway: float,
    default_expiry: float | None = None,
) -> Principal:
    """Validate `claims` for use at `resource`; return the principal or raise `ClaimsError`.

    `exp` is required unless `default_expiry` is given (introspection responses may omit it,
    RFC 7662 section 2.2); the principal then expires at `default_expiry`.
    """
    if claims.get("iss") != issuer:
        raise ClaimsError("wrong_issuer")
    aud = audiences(claims)
    if not aud:
        raise ClaimsError("missing_audience")
    if resource not in aud:
        raise ClaimsError("wrong_audience")
    exp = _number(claims, "exp", required=default_expiry is None)
    if exp is None:
        assert default_expiry is not None
        exp = default_expiry
    if now - leeway >= exp:
        raise ClaimsError("expired")
    nbf = _number(claims, "nbf", required=False)
    if nbf is not None and now + leeway < nbf:
        raise ClaimsError("not_yet_valid")
    iat = _number(claims, "iat", required=False)
    if iat is not None and now + leeway < iat:
        raise ClaimsError("issued_in_future")
    client_id = _optional_str(claims, "client_id") or _optional_str(claims, "azp")
    return Principal(
        issuer=issuer,
        subject=_optional_str(claims, "sub"),
        client_id=client_id,
        scopes=scopes_of(claims),
        expires_at=exp,
        token_id=jti if isinstance(jti := claims.get("jti"), str) else None,
        claims=MappingProxyType(dict(claims)),
    )
