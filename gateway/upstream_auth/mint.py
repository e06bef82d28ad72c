"""`kind: mint`: a short-lived JWT the gateway signs for the upstream, per caller.

RFC 9068 shape: `iss` the gateway (the facade's issuer), `aud` the upstream's configured
audience, `sub` and `client_id` the caller's, `scope` the caller's scopes that the route's policy
knows (nothing the route never asks for), `act` naming the gateway as the party acting for the
caller (RFC 8693 section 4.1), `exp` a few minutes away. Signed with the facade's current key, so
an upstream verifies it against `/oauth/jwks`. One token serves the same caller (issuer,
subject, client, scopes) until shortly before it expires: the hot path signs once per caller
per lifetime, not per request.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.config.upstream_auth import MintAuth
from gateway.errors import CredentialRefusedError
from gateway.oauth.signing import SigningKeys
from gateway.observability.logging import get_logger
from gateway.upstream_auth.base import Caller, header_value

audit = get_logger("gateway.audit")

CACHE_SIZE = 10_000
"""Callers whose minted token is kept (least recently used beyond it are dropped)."""

_Key = tuple[str, str, str, frozenset[str]]


class MintedCredential:
    """Signs and caches the tokens of one route."""

    kind = "mint"

    def __init__(
        self,
        settings: MintAuth,
        *,
        upstream: str,
        issuer: str,
        keys: Callable[[], SigningKeys],
        route_scopes: Callable[[], frozenset[str]],
        count: Callable[[str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.header = settings.header
        self._upstream = upstream
        self._settings = settings
        self._issuer = issuer
        self._keys = keys
        self._route_scopes = route_scopes
        self._count = count
        self._clock = clock
        self._cache: OrderedDict[_Key, tuple[str, float]] = OrderedDict()
        self._renew_margin = max(10, settings.lifetime // 5)

    async def value(self, caller: Caller) -> str:
        principal = caller.principal
        if principal.subject is None or principal.client_id is None:
            self._count("refused")
            audit.info("upstream_token_refused", upstream=self._upstream, reason="no_subject")
            raise CredentialRefusedError(
                "caller's token has no sub or client_id",
                message="The caller's token names no subject or client: no upstream token "
                "can be minted for it",
            )
        scopes = principal.scopes & self._route_scopes()
        key = (principal.issuer, principal.subject, principal.client_id, scopes)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and now < cached[1]:
            self._cache.move_to_end(key)
            self._count("cached")
            return cached[0]
        minted = self._keys().mint_access_token(
            issuer=self._issuer,
            subject=principal.subject,
            client_id=principal.client_id,
            audience=self._settings.audience,
            scopes=scopes,
            lifetime=self._settings.lifetime,
            now=now,
            extra_claims={"act": {"sub": self._issuer}},
        )
        value = header_value(self.header, minted.token)
        self._cache[key] = (value, minted.expires_at - self._renew_margin)
        self._cache.move_to_end(key)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        self._count("issued")
        audit.info("upstream_token_minted", upstream=self._upstream, sub=principal.subject[:128],
                   client_id=principal.client_id[:256], scopes=sorted(scopes),
                   expires_at=minted.expires_at)  # fmt: skip
        return value

    async def close(self) -> None:
        self._cache.clear()
