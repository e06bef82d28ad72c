"""The gateway as an OAuth 2.0 client of a third-party provider (GitHub, Jira, Google Drive...).

Discovery (RFC 8414, then OpenID Connect Discovery) through `gateway.auth.metadata.discover`:
the document's `issuer` must equal the configured one exactly; the document is kept once read
(a failure is not, so the next call tries again). A provider that does not list `S256` in
`code_challenge_methods_supported` is refused unless `allow_unadvertised_pkce` (PKCE S256 is
sent either way, RFC 7636; RFC 9700 section 2.1.1).

The authorization-code flow (RFC 6749 section 4.1) with PKCE S256 and `state`, the RFC 9207
`iss` check of the callback (`gateway.oauth.issuer_check`), code redemption and refresh (RFC
6749 sections 4.1.3 and 6) and revocation (RFC 7009). The client authenticates with
`client_secret_basic` when a secret is configured, else as a public client (`client_id` in the
form). Answers are read bounded and parsed strictly; what the provider says in
`error_description` never reaches a log line or a client, and no token or code is logged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote_plus, urlencode

import aiohttp
from multidict import MultiMapping

from gateway.auth.authenticator import HttpSessionHolder
from gateway.auth.fetch import MAX_DOCUMENT_BYTES, FetchError, read_bounded
from gateway.auth.metadata import discover
from gateway.config.upstream_auth import UserOAuth
from gateway.oauth.issuer_check import check_issuer
from gateway.observability.logging import get_logger
from gateway.upstream_auth.grants import ProviderGrant

__all__ = [
    "GrantRevokedError",
    "ProviderMetadata",
    "ProviderUnavailableError",
    "ThirdPartyProvider",
    "parse_token_answer",
]

log = get_logger("gateway.upstream_auth")

TOKEN_CHARS: Final = re.compile(r"[\x21-\x7e]+")
"""What a token may hold: visible ASCII, so it is safe in an HTTP header (no CR, LF, space)."""

OAUTH_ERRORS: Final = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "unsupported_token_type",
    }
)
"""Error codes of RFC 6749 section 5.2 and RFC 7009 section 2.2.1: the only words of the
provider's that may reach a log line (anything else is logged as the HTTP status)."""


class ProviderUnavailableError(Exception):
    """The provider cannot be used right now: down, too slow, an answer that is malformed or
    refuses the gateway itself (e.g. `invalid_client`), or metadata that does not fit. The
    caller answers 503. The message is the gateway's own, never the provider's words."""


class ProviderUnusableError(ProviderUnavailableError):
    """The provider answered, but not in a way the gateway will use as configured (metadata
    naming another issuer, no PKCE S256): an operator must act. Still a 503 to callers."""


class GrantRevokedError(Exception):
    """The provider answered `invalid_grant`: at refresh, the grant is gone (revoked, expired,
    or its refresh token already used); at redemption, the code was refused (expired, used, or
    the PKCE verifier did not match)."""


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    revocation_endpoint: str | None
    iss_supported: bool | None
    """`authorization_response_iss_parameter_supported`; None when not advertised."""


def _endpoint(document: Mapping[str, Any], name: str) -> str | None:
    """An endpoint URL of the metadata, None when absent; `ProviderUnusableError` when it is
    there but not an http(s) URL."""
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise ProviderUnusableError(f"provider metadata has no usable {name}")
    return value


def _required_endpoint(document: Mapping[str, Any], name: str) -> str:
    value = _endpoint(document, name)
    if value is None:
        raise ProviderUnusableError(f"provider metadata has no {name}")
    return value


def _token(value: object, name: str) -> str:
    if not isinstance(value, str) or not TOKEN_CHARS.fullmatch(value):
        raise ProviderUnavailableError(f"malformed token answer: {name}")
    return value


def parse_token_answer(
    document: Mapping[str, Any], *, now: float, previous: ProviderGrant | None = None
) -> ProviderGrant:
    """A successful token answer (RFC 6749 section 5.1) as a grant, strictly: `access_token`
    (visible ASCII), `token_type` Bearer, `expires_in` a positive integer if present,
    `refresh_token` and `scope` strings if present. A refresh answer without a new
    `refresh_token` keeps `previous`'s (section 6); one without `scope` keeps its scope
    (section 5.1: omitted means unchanged)."""
    access_token = _token(document.get("access_token"), "access_token")
    token_type = document.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise ProviderUnavailableError("malformed token answer: token_type")
    expires_in = document.get("expires_in")
    if expires_in is not None and (
        not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0
    ):
        raise ProviderUnavailableError("malformed token answer: expires_in")
    refresh_token = document.get("refresh_token")
    if refresh_token is None:
        refresh_token = previous.refresh_token if previous is not None else None
    else:
        refresh_token = _token(refresh_token, "refresh_token")
    scope = document.get("scope")
    if scope is None:
        scope = previous.scope if previous is not None else None
    elif not isinstance(scope, str):
        raise ProviderUnavailableError("malformed token answer: scope")
    expires_at = None if expires_in is None else now + expires_in
    return ProviderGrant(access_token, refresh_token, expires_at, scope)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


class ThirdPartyProvider:
    """One route's provider: discovery, the authorization URL, the callback's `iss` check,
    and the token, refresh and revocation requests."""

    def __init__(
        self,
        settings: UserOAuth,
        redirect_uri: str,
        http: HttpSessionHolder,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.redirect_uri = redirect_uri
        self._http = http
        self._clock = clock
        self._within = settings.fetch_timeout
        self._metadata: ProviderMetadata | None = None
        self._discovering = asyncio.Lock()

    @property
    def known_metadata(self) -> ProviderMetadata | None:
        """The metadata once `metadata()` has read it, else None."""
        return self._metadata

    async def metadata(self) -> ProviderMetadata:
        """The provider's metadata, discovered once (concurrent callers share one discovery);
        `ProviderUnavailableError` (or `ProviderUnusableError`) when it cannot be had."""
        if self._metadata is not None:
            return self._metadata
        async with self._discovering:
            if self._metadata is None:
                self._metadata = await self._discover()
        return self._metadata

    async def _discover(self) -> ProviderMetadata:
        issuer = self.settings.issuer
        try:
            document = await discover(self._http.get(), issuer, within=self._within)
        except FetchError as exc:
            log.warning("upstream_provider_discovery_failed", issuer=issuer, reason=str(exc))
            raise ProviderUnavailableError("provider discovery failed") from None
        try:
            methods = document.get("code_challenge_methods_supported")
            if not (isinstance(methods, list) and "S256" in methods):
                if not self.settings.allow_unadvertised_pkce:
                    raise ProviderUnusableError("provider metadata does not list PKCE S256")
                log.warning("upstream_pkce_unadvertised_allowed", issuer=issuer)
            advertised = document.get("authorization_response_iss_parameter_supported")
            return ProviderMetadata(
                issuer=issuer,
                authorization_endpoint=_required_endpoint(document, "authorization_endpoint"),
                token_endpoint=_required_endpoint(document, "token_endpoint"),
                revocation_endpoint=_endpoint(document, "revocation_endpoint"),
                iss_supported=None if advertised is None else advertised is not False,
            )
        except ProviderUnusableError as exc:
            log.warning("upstream_provider_discovery_failed", issuer=issuer, reason=str(exc))
            raise

    async def authorization_url(self, *, state: str, code_challenge: str) -> str:
        """Where to send the user's browser (RFC 6749 section 4.1.1, PKCE S256 RFC 7636
        section 4.3)."""
        metadata = await self.metadata()
        params = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": self.redirect_uri,
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        if self.settings.scopes:
            params["scope"] = " ".join(self.settings.scopes)
        separator = "&" if "?" in metadata.authorization_endpoint else "?"
        return metadata.authorization_endpoint + separator + urlencode(params)

    def check_issuer(self, query: Mapping[str, Sequence[str]] | MultiMapping[str]) -> None:
        """The RFC 9207 section 2.4 check of the callback `query` (every value of every
        parameter: aiohttp's `request.query`), before the code goes anywhere; raises
        `IssuerMismatchError`. Needs the metadata: `await metadata()` first (a replica that
        has not read it yet raises `ProviderUnavailableError` rather than guess)."""
        metadata = self._metadata
        if metadata is None:
            raise ProviderUnavailableError("provider metadata not read yet")
        check_issuer(query, expected_issuer=metadata.issuer, iss_supported=metadata.iss_supported)

    async def redeem(self, code: str, verifier: str) -> ProviderGrant:
        """The grant for an authorization code (RFC 6749 section 4.1.3, RFC 7636 4.5)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": verifier,
        }
        answer = await self._token_request(form, "authorization_code")
        return parse_token_answer(answer, now=self._clock())

    async def refresh(self, grant: ProviderGrant) -> ProviderGrant:
        """A new grant from `grant`'s refresh token (RFC 6749 section 6); `GrantRevokedError`
        when the provider answers `invalid_grant` (or there is no refresh token)."""
        if grant.refresh_token is None:
            raise GrantRevokedError("the grant has no refresh token")
        form = {"grant_type": "refresh_token", "refresh_token": grant.refresh_token}
        answer = await self._token_request(form, "refresh_token")
        return parse_token_answer(answer, now=self._clock(), previous=grant)

    async def revoke(self, grant: ProviderGrant) -> bool:
        """Revoke the grant's tokens at the provider (RFC 7009): the refresh token first (which
        revokes the grant at most providers), then the access token. False when the provider
        has no `revocation_endpoint`; `ProviderUnavailableError` when a revocation failed."""
        metadata = await self.metadata()
        endpoint = metadata.revocation_endpoint
        if endpoint is None:
            return False
        tokens = (("refresh_token", grant.refresh_token), ("access_token", grant.access_token))
        for hint, token in tokens:
            if token is None:
                continue
            status, _ = await self._post(endpoint, {"token": token, "token_type_hint": hint})
            if status != 200:  # RFC 7009 section 2.2: 200 even for an unknown token
                log.warning("upstream_provider_revocation_failed", status=status, hint=hint)
                raise ProviderUnavailableError("revocation failed")
        return True

    def _client_auth(self, form: dict[str, str]) -> dict[str, str]:
        """Headers for the client's authentication (RFC 6749 section 2.3.1: the id and secret
        form-encoded, then Basic); a public client puts `client_id` in `form` instead."""
        headers = {"Accept": "application/json"}
        secret = self.settings.client_secret
        if secret is None:
            form["client_id"] = self.settings.client_id
            return headers
        pair = f"{quote_plus(self.settings.client_id)}:{quote_plus(secret.get_secret_value())}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        return headers

    async def _post(self, url: str, form: Mapping[str, str]) -> tuple[int, bytes]:
        """POST the form (bounded read, no redirects): (status, body)."""
        data = dict(form)
        headers = self._client_auth(data)
        try:
            async with self._http.get().post(
                url,
                data=data,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._within),
            ) as response:
                body = await read_bounded(
                    response.content, MAX_DOCUMENT_BYTES, declared=response.content_length
                )
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("upstream_provider_unreachable", issuer=self.settings.issuer,
                        error=type(exc).__name__)  # fmt: skip
            raise ProviderUnavailableError("provider unreachable") from None
        if body is None:
            raise ProviderUnavailableError("provider answer too large")
        return status, body

    async def _token_request(self, form: Mapping[str, str], grant_type: str) -> dict[str, Any]:
        metadata = await self.metadata()
        status, body = await self._post(metadata.token_endpoint, form)
        document = _json_object(body)
        if status == 200 and document is not None:
            return document
        error = document.get("error") if document is not None else None
        if status in (400, 401) and error == "invalid_grant":
            log.info("upstream_provider_invalid_grant", grant_type=grant_type)
            raise GrantRevokedError("the provider answered invalid_grant")
        reason = error if isinstance(error, str) and error in OAUTH_ERRORS else f"HTTP {status}"
        log.warning("upstream_provider_token_refused", issuer=self.settings.issuer,
                    grant_type=grant_type, reason=reason)  # fmt: skip
        raise ProviderUnavailableError("the provider's token endpoint did not answer usably")
