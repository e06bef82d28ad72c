"""Signing a browser in for one of the gateway's own pages (a `user_oauth` connect page) that
must know who is signed in at the facade and found the browser signed in as nobody
(`gateway.oauth.page_sign_in`).

`PageSignIns.start` parks the sign-in with the page to return to and sends the browser to the
local sign-in form or the OpenID provider, bound to its flow cookie as a client's sign-in is.
The form posts to `/oauth/sign-in` and the provider answers at `/oauth/callback`, like a
client's sign-in; a page sign-in's `state` tells them apart (`records.names_page_sign_in`)
and `BrowserSteps` hands them here. After the sign-in a session starts and the browser goes
back to the page, which decides whether this user may use it.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from aiohttp import web

from gateway.oauth.error import OAuthError
from gateway.oauth.outcome import PageSignInFailed
from gateway.oauth.page_sign_in import EXPIRED
from gateway.oauth.records import SIGN_IN_STAGE, UPSTREAM_STAGE, digest
from gateway.oauth.server import AuthorizationServer
from gateway.oauth.upstream import UpstreamProvider, pkce_pair, provider_auth_time
from gateway.observability.logging import get_logger
from gateway.web.facade import pages
from gateway.web.facade.cookies import Cookies
from gateway.web.facade.error import refused
from gateway.web.facade.signing_in import (
    ProviderRefusal,
    provider_claims,
    signed_in_redirect,
    to_provider,
)

audit = get_logger("gateway.audit")


class PageSignIns:
    """The facade's sign-in, for the gateway's own pages."""

    def __init__(
        self, server: AuthorizationServer, cookies: Cookies, upstream: UpstreamProvider | None
    ) -> None:
        self.server = server
        self.cookies = cookies
        self.upstream = upstream

    async def subject(self, request: web.Request) -> str | None:
        """Who this browser is signed in as at the facade (None: nobody, or sessions off)."""
        session = await self.server.session(self.cookies.session(request))
        return None if session is None else session.subject

    async def start(self, request: web.Request, return_to: str, purpose: str) -> web.Response:
        """Send this browser to sign in (the local form, or the OpenID provider) and then
        back to `return_to`, a connect page's path with its query; `purpose` says on the
        form what the sign-in is for."""
        browser = self.cookies.flow(request)
        if self.upstream is None:
            state = await self.server.begin_page_sign_in(
                return_to, purpose, stage=SIGN_IN_STAGE, browser=digest(browser)
            )
            response = pages.page_sign_in_page(state, purpose)
        else:
            verifier, challenge = pkce_pair()
            nonce = secrets.token_urlsafe(24)
            state = await self.server.begin_page_sign_in(
                return_to, purpose, stage=UPSTREAM_STAGE, browser=digest(browser),
                code_verifier=verifier, nonce=nonce,
            )  # fmt: skip
            response = await to_provider(self.upstream, state, nonce, challenge)
        self.cookies.set_flow(response, browser)
        audit.info("page_sign_in_started", page=_page(return_to),
                   via="local" if self.upstream is None else "oidc")  # fmt: skip
        return response

    async def sign_in(
        self, request: web.Request, state: str, username: str, password: str
    ) -> web.Response:
        """The local form of a page sign-in, posted (its `Origin` and the rate limit already
        checked by `BrowserSteps.sign_in`)."""
        browser = self.cookies.flow_digest(request)
        try:
            outcome = await self.server.page_sign_in_local(state, username, password, browser)
        except OAuthError as error:
            return refused("sign_in_refused", error, page=True)
        if isinstance(outcome, PageSignInFailed):
            audit.warning("sign_in_failed", user=username[:64])
            return pages.page_sign_in_page(outcome.state, outcome.purpose, failed=True)
        audit.info("signed_in", user=username[:64], via="local", page=_page(outcome.location))
        return await signed_in_redirect(self.server, self.cookies, request, outcome)

    async def callback(
        self, request: web.Request, upstream: UpstreamProvider, state: str
    ) -> web.Response:
        """The OpenID provider's answer to a page sign-in: the state only in the browser that
        began, then the provider's answer as for a client (`iss` first); a refusal is a page,
        there being no client to send it to."""
        txn = await self.server.take_page_sign_in(
            state, UPSTREAM_STAGE, self.cookies.flow_digest(request)
        )
        if txn is None or txn.code_verifier is None or txn.nonce is None:
            return refused("upstream_callback_refused", OAuthError("invalid_request", EXPIRED),
                           page=True)  # fmt: skip
        claims = await provider_claims(upstream, request.query, txn.code_verifier, txn.nonce)
        if isinstance(claims, ProviderRefusal):
            return pages.error_page(
                400, f"{claims.description}. Open the link from your application again."
            )
        subject = str(claims["sub"])
        audit.info("signed_in", sub=subject[:128], via="oidc", page=_page(txn.return_to))
        auth_time = provider_auth_time(claims)
        outcome = await self.server.page_signed_in(txn, subject, dict(claims), auth_time=auth_time)
        return await signed_in_redirect(self.server, self.cookies, request, outcome)


def _page(location: str) -> str:
    """The page a sign-in returns to, for logs: its path only (the query holds the ticket)."""
    return urlsplit(location).path


PAGE_SIGN_INS = web.AppKey("page_sign_ins", PageSignIns)
"""Set by `FacadeEndpoints.install`: the facade's page sign-ins, for the connect pages."""
