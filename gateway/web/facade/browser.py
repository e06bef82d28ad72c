"""The steps a user's browser goes through: the authorization request, the consent form,
sign-in (the local form, or the upstream provider and back), and sign-out. The sign-in form
and the provider's callback also serve sign-ins for the gateway's own pages, told apart by
their `state` (`page_sign_in.PageSignIns`).

Each form POST must come from the gateway's own pages (`forms.foreign_form_post`), and each
step is bound to the browser that started the flow by its flow cookie.
"""

from __future__ import annotations

import secrets

from aiohttp import hdrs, web

from gateway.oauth.error import OAuthError
from gateway.oauth.outcome import Redirect, SignInFailed
from gateway.oauth.records import (
    SIGN_IN_STAGE,
    UPSTREAM_STAGE,
    AuthorizationRequest,
    SignInSession,
    digest,
    names_page_sign_in,
)
from gateway.oauth.server import AuthorizationServer
from gateway.oauth.upstream import UpstreamProvider, pkce_pair, provider_auth_time
from gateway.observability.logging import get_logger
from gateway.web.facade import forms, pages
from gateway.web.facade.cookies import Cookies
from gateway.web.facade.error import refused
from gateway.web.facade.page_sign_in import PageSignIns
from gateway.web.facade.rate_limit import RateLimit
from gateway.web.facade.signing_in import (
    ProviderRefusal,
    provider_claims,
    signed_in_redirect,
    to_provider,
)
from gateway.web.keys import CONTEXT_KEY

audit = get_logger("gateway.audit")


class BrowserSteps:
    """The page handlers of the facade, over one `AuthorizationServer`."""

    def __init__(
        self,
        server: AuthorizationServer,
        cookies: Cookies,
        upstream: UpstreamProvider | None,
        sign_ins: RateLimit,
    ) -> None:
        self.server = server
        self.cookies = cookies
        self.upstream = upstream
        self.own_origin = forms.origin_of(server.settings.issuer)
        self._sign_ins = sign_ins
        self.for_pages = PageSignIns(server, cookies, upstream)
        """Sign-ins for the gateway's own pages: their forms and callbacks come here too."""

    async def authorize(self, request: web.Request) -> web.Response:
        try:
            _, parked = await self.server.check_authorization(request.query)
        except OAuthError as error:
            return refused("authorization_refused", error, page=True)
        browser = self.cookies.flow(request)
        session = await self._session(request)
        outcome = await self.server.authorize(parked, session, digest(browser))
        if isinstance(outcome, Redirect):
            return pages.redirect(outcome.location)
        response = pages.consent_page(outcome)
        self.cookies.set_flow(response, browser)
        return response

    async def consent(self, request: web.Request) -> web.Response:
        if (foreign := self._foreign_form_post(request)) is not None:
            return foreign
        try:
            form = await forms.form(request)
            outcome = await self.server.consent(
                form.get("state", ""),
                approve=form.get("decision") == "approve",
                browser=self.cookies.flow_digest(request),
                session=await self._session(request),
            )
        except OAuthError as error:
            return refused("consent_refused", error, page=True)
        if isinstance(outcome, Redirect):
            return pages.redirect(outcome.location)
        return await self._start_sign_in(request, outcome.request)

    async def _start_sign_in(
        self, request: web.Request, parked: AuthorizationRequest
    ) -> web.Response:
        """After consent: the local sign-in form, or off to the upstream provider; either way
        bound to this browser's flow cookie."""
        browser = self.cookies.flow_digest(request)
        if self.upstream is None:
            state = await self.server.begin(parked, stage=SIGN_IN_STAGE, browser=browser)
            return pages.sign_in_page(state, await self.server.describe(parked))
        verifier, challenge = pkce_pair()
        nonce = secrets.token_urlsafe(24)
        state = await self.server.begin(
            parked, stage=UPSTREAM_STAGE, browser=browser, code_verifier=verifier, nonce=nonce
        )
        fresh = {"prompt": "login"} if "login" in parked.prompt else {}
        if parked.max_age is not None:
            fresh["max_age"] = str(parked.max_age)
        return await to_provider(self.upstream, state, nonce, challenge, fresh)

    async def callback(self, request: web.Request) -> web.Response:
        """The upstream provider sends the user back here. The `state` must be one this
        browser started (its flow cookie; login CSRF), and the provider's `iss` is checked
        before the code goes anywhere (RFC 9207 section 2.4); its error text is never shown or
        passed on. Routed only with federated login."""
        upstream = self.upstream
        if upstream is None:
            return pages.page(404, "Not found", "<p>There is nothing here.</p>")
        states = request.query.getall("state", ())
        if len(states) == 1 and names_page_sign_in(states[0]):
            return await self.for_pages.callback(request, upstream, states[0])
        browser = self.cookies.flow_digest(request)
        txn = (
            await self.server.take_upstream_login(states[0], browser) if len(states) == 1 else None
        )
        if txn is None or txn.code_verifier is None or txn.nonce is None:
            return refused("upstream_callback_refused", OAuthError("invalid_request", "This "
                           "sign-in has expired, is not valid or was started in another "
                           "browser. Start again from your application."), page=True)  # fmt: skip
        parked = txn.request
        claims = await provider_claims(
            upstream, request.query, txn.code_verifier, txn.nonce, parked.max_age
        )
        if isinstance(claims, ProviderRefusal):
            redirect = self.server.error_redirect(parked, "access_denied", claims.description)
            return pages.redirect(redirect.location)
        audit.info("signed_in", sub=str(claims["sub"])[:128], via="oidc",
                   client_id=parked.client_id)  # fmt: skip
        auth_time = provider_auth_time(claims)
        outcome = await self.server.signed_in(
            parked, str(claims["sub"]), dict(claims), auth_time=auth_time
        )
        return await signed_in_redirect(self.server, self.cookies, request, outcome)

    async def sign_in(self, request: web.Request) -> web.Response:
        if self.server.users is None:  # users sign in at the upstream provider
            return pages.page(404, "Not found", "<p>There is no sign-in form here.</p>")
        if (foreign := self._foreign_form_post(request)) is not None:
            return foreign
        try:
            form = await forms.form(request)
        except OAuthError as error:
            return refused("sign_in_refused", error, page=True)
        state = form.get("state", "")
        username, password = form.get("username", ""), form.get("password", "")
        if not await self._sign_ins.allow(f"{request[CONTEXT_KEY].client}|{username}"):
            audit.warning("sign_in_refused", reason="rate limited", user=username[:64])
            return pages.page(429, "Too many attempts", "<p>Wait a minute, then try again.</p>")
        if names_page_sign_in(state):
            return await self.for_pages.sign_in(request, state, username, password)
        browser = self.cookies.flow_digest(request)
        try:
            outcome = await self.server.sign_in_local(state, username, password, browser)
        except OAuthError as error:
            return refused("sign_in_refused", error, page=True)
        if isinstance(outcome, SignInFailed):
            audit.warning("sign_in_failed", user=username[:64])
            return pages.sign_in_page(outcome.state, outcome.described, failed=True)
        audit.info("signed_in", user=username[:64], via="local")
        return await signed_in_redirect(self.server, self.cookies, request, outcome)

    async def _session(self, request: web.Request) -> SignInSession | None:
        return await self.server.session(self.cookies.session(request))

    async def sign_out_page(self, request: web.Request) -> web.Response:
        """A page with one button: the sign-out itself is a POST (with `Origin` checked)."""
        return pages.page(200, "Sign out", pages.SIGN_OUT_FORM)

    async def sign_out(self, request: web.Request) -> web.Response:
        if (foreign := self._foreign_form_post(request)) is not None:
            return foreign
        await self.server.sign_out(self.cookies.session(request))
        response = pages.page(200, "Signed out", "<p>You are signed out of this gateway.</p>")
        self.cookies.clear_session(response)
        return response

    def _foreign_form_post(self, request: web.Request) -> web.Response | None:
        """A 403 page for a sign-in or consent POST not sent from the gateway's own pages."""
        reason = forms.foreign_form_post(request.headers.getall(hdrs.ORIGIN, []), self.own_origin)
        if reason is None:
            return None
        audit.warning("form_post_refused", path=request.path, reason=reason)
        return pages.page(403, "Cannot continue", "<p>This form can only be sent from this "
                          "server's own page. Start again from your application.</p>")  # fmt: skip
