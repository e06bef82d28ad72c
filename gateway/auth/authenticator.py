"""Authenticating a request on a route: from the Authorization header to a `Principal`.

Order of work, cheapest first: header syntax -> verified-token cache -> issuer lookup ->
JWT signature and claims (or RFC 7662 introspection) -> cache. Every refusal raises a
`GatewayError` carrying this route's Bearer challenge; an unreachable key source raises
`AuthUnavailableError` (503), never a pass.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import aiohttp

from gateway.auth.bearer import BearerHeaderError, BearerTokenSyntaxError, bearer_token
from gateway.auth.claims import ClaimsError, check_claims
from gateway.auth.expiry_watch import ExpiryWatch
from gateway.auth.fetch import FetchError, fetch_json
from gateway.auth.introspection import introspect
from gateway.auth.jwks import JwksCache, KeysUnavailableError
from gateway.auth.jwt import (
    TokenError,
    UnverifiedJwt,
    check_header,
    looks_like_jwt,
    parse_jwt,
    verify_with_any,
)
from gateway.auth.metadata import discover
from gateway.auth.principal import Principal
from gateway.auth.revocation_watch import RevocationWatch
from gateway.auth.token_cache import TokenCache
from gateway.config.auth import AuthorizationServer, ResourceServer
from gateway.errors import (
    AuthenticationError,
    AuthUnavailableError,
    InvalidAuthorizationHeaderError,
    InvalidTokenError,
)

NO_EXP_LIFETIME = 60.0
"""Seconds (at least; `ttl_without_exp` if longer) a principal from an active introspection
answer without `exp` lasts: it bounds the responses streamed to it. New requests trust such an
answer only for `introspection.ttl_without_exp` seconds."""


class HttpSessionHolder:
    """The outbound HTTP session, created when the app starts (it needs a running loop)."""

    session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self.session is None:
            raise AuthUnavailableError("outbound HTTP session is not running")
        return self.session


class TrustedServer:
    """One configured authorization server and its key source (shared by every route)."""

    def __init__(
        self,
        config: AuthorizationServer,
        settings: ResourceServer,
        http: HttpSessionHolder,
        on_jwks_fetch: Callable[[str, str], None],
        local_jwks: Callable[[], dict[str, object]] | None = None,
    ) -> None:
        """`local_jwks`: the keys are this process's own (the gateway's authorization server):
        read them directly instead of over HTTP."""
        self.config = config
        self._local_jwks = local_jwks
        self.issuer = config.issuer
        self.algorithms = frozenset(config.algorithms)
        self._http = http
        self._within = settings.fetch_timeout
        self.jwks = JwksCache(
            self._fetch_jwks,
            cache_ttl=settings.jwks_cache_ttl,
            cooldown=settings.jwks_refetch_cooldown,
            on_fetch=lambda outcome: on_jwks_fetch(config.name, outcome),
        )

    async def _fetch_jwks(self) -> dict[str, object]:
        if self._local_jwks is not None:
            return self._local_jwks()
        session = self._http.get()
        jwks_uri = self.config.jwks_uri
        if jwks_uri is None:
            metadata = await discover(session, self.issuer, within=self._within)
            found = metadata.get("jwks_uri")
            if not isinstance(found, str):
                raise FetchError("metadata has no jwks_uri")
            jwks_uri = found
        return await fetch_json(session, "GET", jwks_uri, within=self._within)

    async def introspect(self, token: str) -> dict[str, object]:
        settings = self.config.introspection
        if settings is None:  # only servers configured for introspection are asked
            raise AuthUnavailableError(f"{self.config.name} has no introspection endpoint")
        try:
            return await introspect(self._http.get(), settings, token, within=self._within)
        except FetchError as exc:
            raise AuthUnavailableError(f"introspection failed: {exc}") from None


class Revocations:
    """Revoked `jti`s of the tokens one issuer (the gateway's own authorization server) minted:
    checked on every request, cached or not.

    With a shared store each check would be a round trip on the hot path, so a token found
    not revoked is trusted for `recheck_after` seconds before asking again: a revocation made
    through another replica takes effect within that time (0: ask every time, for a store in
    this process). The same holds for the streams such tokens opened (`streams`)."""

    def __init__(
        self,
        issuer: str,
        is_revoked: Callable[[str], Awaitable[bool]],
        *,
        recheck_after: float = 0.0,
        max_entries: int = 100_000,
    ) -> None:
        self.issuer = issuer
        self._is_revoked = is_revoked
        self._recheck_after = recheck_after
        self._max_entries = max_entries
        self._checked: dict[str, float] = {}  # jti -> when it was found not revoked
        self.streams = RevocationWatch(issuer, is_revoked, interval=recheck_after)
        """The open streams of this issuer's tokens, closed when their token is revoked."""

    def revoked_here(self) -> None:
        """Something was (or may have been) revoked through this replica: it takes effect here
        at once, for new requests and for the open streams."""
        self._checked.clear()
        self.streams.check_now()

    async def is_revoked(self, jti: str) -> bool:
        if self._recheck_after <= 0:
            return await self._is_revoked(jti)
        now = time.monotonic()
        checked = self._checked.get(jti)
        if checked is not None and now - checked < self._recheck_after:
            return False
        revoked = await self._is_revoked(jti)
        if revoked:
            self._checked.pop(jti, None)
        else:
            if len(self._checked) >= self._max_entries:
                self._checked.clear()  # crude but bounded: costs one round of re-checks
            self._checked[jti] = now
        return revoked


class RouteAuthenticator:
    """Validates bearer tokens for one route (one resource URL)."""

    def __init__(
        self,
        *,
        resource: str,
        metadata_url: str,
        scopes: Sequence[str],
        servers: Sequence[TrustedServer],
        settings: ResourceServer,
        cache: TokenCache,
        on_outcome: Callable[[str], None],
        revocations: Revocations | None = None,
    ) -> None:
        self.resource = resource
        self.revocations = revocations
        """The gateway's own tokens' revocations, also for the streams they open; or None."""
        self.expiries = ExpiryWatch()
        """The open streams of this route's tokens, ended when their token expires."""
        self._servers = {server.issuer: server for server in servers}
        self._introspecting = [s for s in servers if s.config.introspection is not None]
        self._leeway = settings.leeway
        self._max_token = settings.max_token_bytes
        self._cache = cache
        self._on_outcome = on_outcome
        self.challenge: dict[str, str] = {"resource_metadata": metadata_url}
        if scopes:
            self.challenge["scope"] = " ".join(scopes)
        self._invalid_challenge = self.challenge | {
            "error": "invalid_token",
            "error_description": "The access token is missing, invalid, expired or not issued "
            "for this resource",
        }

    def insufficient_scope_challenge(self, required: Iterable[str]) -> dict[str, str]:
        """The 403 step-up challenge naming every scope the refused operation needs, so the
        client can ask for them all at once (RFC 6750 section 3.1, insufficient_scope)."""
        return {
            "error": "insufficient_scope",
            "scope": " ".join(sorted(required)),
            "resource_metadata": self.challenge["resource_metadata"],
            "error_description": "This operation needs the scopes listed in scope",
        }

    async def authenticate(self, authorization: Sequence[str]) -> Principal:
        """The principal for the request's Authorization header values, or a GatewayError."""
        try:
            token = bearer_token(authorization, self._max_token)
        except BearerHeaderError:
            self._on_outcome("malformed")
            raise InvalidAuthorizationHeaderError(
                "duplicate Authorization headers",
                challenge=self.challenge
                | {"error": "invalid_request", "error_description": "One Authorization header"},
            ) from None
        except BearerTokenSyntaxError:
            self._on_outcome("invalid")
            raise InvalidTokenError("token syntax", challenge=self._invalid_challenge) from None
        if token is None:
            self._on_outcome("missing")
            raise AuthenticationError("no token", challenge=self.challenge)
        now = time.time()
        principal = self._cache.get(self.resource, token, now)
        if principal is not None:
            if self.revocations is not None:  # no await at all on the usual hot path
                await self._not_revoked(principal, self.revocations)
            self._on_outcome("cached")
            return principal
        try:
            principal, trust_until = await self._validate(token, now)
        except (TokenError, ClaimsError) as exc:
            self._on_outcome("invalid")
            raise InvalidTokenError(exc.reason, challenge=self._invalid_challenge) from None
        except AuthUnavailableError:
            self._on_outcome("unavailable")
            raise
        if self.revocations is not None:
            await self._not_revoked(principal, self.revocations)
        self._on_outcome("valid")
        if trust_until is None or trust_until > now:
            self._cache.put(self.resource, token, principal, until=trust_until)
        return principal

    async def _not_revoked(self, principal: Principal, revocations: Revocations) -> None:
        if principal.issuer != revocations.issuer:
            return
        try:
            revoked = principal.token_id is None or await revocations.is_revoked(principal.token_id)
        except AuthUnavailableError:  # the store is down: refuse (503), never let it pass
            self._on_outcome("unavailable")
            raise
        if revoked:
            self._on_outcome("invalid")
            raise InvalidTokenError("revoked", challenge=self._invalid_challenge)

    async def _validate(self, token: str, now: float) -> tuple[Principal, float | None]:
        """The principal, and until when its verdict may be cached if that is before its
        token's expiry (None: until then)."""
        if not looks_like_jwt(token):
            return await self._introspect(token, now)
        jwt = parse_jwt(token)
        iss = jwt.claims.get("iss")
        server = self._servers.get(iss) if isinstance(iss, str) else None
        if server is None:
            raise TokenError("unknown_issuer")
        if server.config.introspection is not None:
            return await self._introspect(token, now, only=server)
        check_header(jwt, algorithms=server.algorithms, require_at_jwt=server.config.require_at_jwt)
        await self._verify(server, jwt)
        principal = check_claims(
            jwt.claims, issuer=server.issuer, resource=self.resource, now=now, leeway=self._leeway
        )
        return principal, None

    async def _verify(self, server: TrustedServer, jwt: UnverifiedJwt) -> None:
        try:
            keys = await server.jwks.keys_for(jwt.kid)
        except KeysUnavailableError as exc:
            raise AuthUnavailableError(f"keys of {server.config.name}: {exc}") from None
        verify_with_any(jwt, keys)

    async def _introspect(
        self, token: str, now: float, only: TrustedServer | None = None
    ) -> tuple[Principal, float | None]:
        """RFC 7662: an active answer with `exp` is trusted until then; one without `exp`
        (section 2.2 makes it optional) only for `ttl_without_exp` seconds, so a token the
        authorization server deactivates stops working soon (at once with 0)."""
        servers = [only] if only is not None else self._introspecting
        if not servers:
            raise TokenError("malformed")
        for server in servers:
            answer = await server.introspect(token)
            if answer.get("active") is not True:
                continue
            claims = {"iss": server.issuer} | answer  # `iss` is optional in the response
            settings = server.config.introspection
            ttl = settings.ttl_without_exp if settings is not None else 0.0
            principal = check_claims(
                claims,
                issuer=server.issuer,
                resource=self.resource,
                now=now,
                leeway=self._leeway,
                default_expiry=now + max(NO_EXP_LIFETIME, ttl),
            )
            return principal, (now + ttl if answer.get("exp") is None else None)
        raise TokenError("inactive")
