"""The sign-in steps a client's authorization and a page sign-in share: off to the OpenID
provider, its answer read back at `/oauth/callback`, and the redirect that ends a sign-in
with the new session's cookie."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from gateway.oauth.issuer_check import IssuerMismatchError, check_issuer
from gateway.oauth.outcome import Redirect
from gateway.oauth.server import AuthorizationServer
from gateway.oauth.upstream import (
    UpstreamLoginError,
    UpstreamProvider,
    UpstreamProviderUnusableError,
)
from gateway.observability.logging import get_logger
from gateway.web.facade import pages
from gateway.web.facade.cookies import Cookies

audit = get_logger("gateway.audit")

NOT_VERIFIED = "The sign-in could not be verified"
NOT_COMPLETED = "Sign-in at the identity provider did not complete"


@dataclass(frozen=True, slots=True)
class ProviderRefusal:
    """The provider's answer cannot be used; `description` is the gateway's own words."""

    description: str


async def to_provider(
    upstream: UpstreamProvider,
    state: str,
    nonce: str,
    challenge: str,
    fresh: Mapping[str, str] | None = None,
) -> web.Response:
    """The redirect to the provider's sign-in, or a 503 page when it cannot be used."""
    try:
        location = await upstream.authorization_url(state, nonce, challenge, fresh=fresh)
    except UpstreamProviderUnusableError as error:
        audit.warning("upstream_provider_unusable", reason=error.reason)
        return pages.page(503, "Sign-in unavailable", pages.PROVIDER_UNUSABLE)
    except UpstreamLoginError as error:
        # Not error: any client can start a sign-in; the outage shows as 503s in the access log.
        audit.warning("upstream_login_unavailable", reason=error.reason)
        return pages.page(503, "Sign-in unavailable", pages.PROVIDER_UNREACHABLE)
    return pages.redirect(location)


async def provider_claims(
    upstream: UpstreamProvider,
    query: MultiMapping[str],
    code_verifier: str,
    nonce: str,
    max_age: int | None = None,
) -> Mapping[str, Any] | ProviderRefusal:
    """The signed-in user's claims from the provider's answer at the callback: its `iss`
    checked first (RFC 9207 section 2.4), before the code goes anywhere; the code redeemed
    with our PKCE verifier; the ID token checked against our nonce (and its `auth_time`
    against the `max_age` the sign-in passed on). The provider's own words never pass on."""
    try:
        metadata = await upstream.metadata()
        check_issuer(query, expected_issuer=metadata.issuer, iss_supported=metadata.iss_supported)
    except (IssuerMismatchError, UpstreamLoginError) as error:
        audit.warning("upstream_login_refused", reason=error.reason)
        return ProviderRefusal(NOT_VERIFIED)
    codes = query.getall("code", ())
    if "error" in query or len(codes) != 1:
        audit.info("upstream_login_failed")
        return ProviderRefusal(NOT_COMPLETED)
    try:
        return await upstream.redeem(codes[0], code_verifier, nonce, max_age=max_age)
    except UpstreamLoginError as error:
        audit.warning("upstream_login_refused", reason=error.reason)
        return ProviderRefusal(NOT_VERIFIED)


async def signed_in_redirect(
    server: AuthorizationServer, cookies: Cookies, request: web.Request, outcome: Redirect
) -> web.Response:
    """The redirect that ends a sign-in, with the new sign-in session's cookie; a session the
    browser held before (`prompt=login`, `max_age`) ends, so a cookie names one sign-in only."""
    response = pages.redirect(outcome.location)
    if outcome.session is not None:
        previous = cookies.session(request)
        if previous:
            await server.store.end_session(previous)
        cookies.set_session(response, outcome.session)
    return response
