"""The facade's routes: its documents (metadata, JWKS), its JSON endpoints (registration,
token, revocation) and the browser's pages (`browser.BrowserSteps`)."""

from __future__ import annotations

import secrets

from aiohttp import web

from gateway.auth.authenticator import HttpSessionHolder
from gateway.config.model import GatewayConfig
from gateway.oauth.error import OAuthError
from gateway.oauth.server import AuthorizationServer
from gateway.oauth.upstream import UpstreamProvider
from gateway.observability.logging import get_logger
from gateway.store.kv import KeyValueStore
from gateway.store.memory import MemoryKV
from gateway.web.facade import forms
from gateway.web.facade.browser import BrowserSteps
from gateway.web.facade.cookies import Cookies
from gateway.web.facade.error import JSON_HEADERS, fail_closed, refused, render
from gateway.web.facade.page_sign_in import PAGE_SIGN_INS
from gateway.web.facade.rate_limit import RateLimit
from gateway.web.keys import CONTEXT_KEY

audit = get_logger("gateway.audit")

RATE_KEYS = 100_000
"""Rate-limit counters kept in memory (without a shared store); past it the oldest go."""
DOCUMENT_HEADERS = {"Cache-Control": "public, max-age=300"}


class FacadeEndpoints:
    def __init__(
        self,
        server: AuthorizationServer,
        config: GatewayConfig,
        http: HttpSessionHolder,
        shared: KeyValueStore | None = None,
    ) -> None:
        self.server = server
        settings = config.auth.authorization_server
        assert settings is not None  # the app installs these endpoints only in facade mode
        upstream = None
        if settings.login.oidc is not None:
            callback = server.settings.issuer + "/oauth/callback"
            upstream = UpstreamProvider(settings.login.oidc, callback, http)
        counters = shared if shared is not None else MemoryKV({"rate": RATE_KEYS})
        self._registrations = RateLimit(counters, "register", settings.registrations_per_minute)
        sign_ins = RateLimit(counters, "sign-in", settings.sign_ins_per_minute)
        cookies = Cookies(server.settings.issuer, settings)
        self.browser = BrowserSteps(server, cookies, upstream, sign_ins)

    def install(self, app: web.Application) -> None:
        browser = self.browser
        app[PAGE_SIGN_INS] = browser.for_pages
        for path in (
            "/.well-known/oauth-authorization-server",
            "/.well-known/openid-configuration",
        ):
            app.router.add_get(path, self.metadata, allow_head=False)
        app.router.add_get("/oauth/jwks", self.jwks, allow_head=False)
        app.router.add_post("/oauth/register", fail_closed(self.register))
        app.router.add_get(
            "/oauth/authorize", fail_closed(browser.authorize, page=True), allow_head=False
        )
        # Users sign in either on the gateway's form or at the upstream provider, which sends
        # them back to the callback; the other endpoint does not exist (404 like any path).
        if browser.upstream is None:
            app.router.add_post("/oauth/sign-in", fail_closed(browser.sign_in, page=True))
        else:
            app.router.add_get(
                "/oauth/callback", fail_closed(browser.callback, page=True), allow_head=False
            )
        app.router.add_post("/oauth/consent", fail_closed(browser.consent, page=True))
        app.router.add_get("/oauth/sign-out", browser.sign_out_page, allow_head=False)
        app.router.add_post("/oauth/sign-out", fail_closed(browser.sign_out, page=True))
        app.router.add_post("/oauth/token", fail_closed(self.token))
        app.router.add_post("/oauth/revoke", fail_closed(self.revoke))

    async def metadata(self, request: web.Request) -> web.Response:
        return web.json_response(self.server.metadata(), headers=DOCUMENT_HEADERS)

    async def jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self.server.keys.jwks(), headers=DOCUMENT_HEADERS)

    async def register(self, request: web.Request) -> web.Response:
        if not await self._registrations.allow(request[CONTEXT_KEY].client or ""):
            return refused("registration_refused", OAuthError("slow_down", "Too many "
                           "registrations; retry later", 429))  # fmt: skip
        try:
            document = await forms.json_body(request)
            secret = secrets.token_urlsafe(32)
            answer = await self.server.register(
                document, client_id=secrets.token_urlsafe(16), secret=secret
            )
        except OAuthError as error:
            return refused("registration_refused", error)
        audit.info("client_registered", client_id=answer["client_id"])
        return web.json_response(answer, status=201, headers=JSON_HEADERS)

    async def token(self, request: web.Request) -> web.Response:
        try:
            form = await forms.form(request)
            answer = await self.server.token(form, forms.basic(request))
        except OAuthError as error:
            if error.error == "invalid_grant":  # a replayed or stolen code or refresh token
                audit.warning("token_refused", error=error.error, reason=error.description)
                return render(error)
            return refused("token_refused", error)
        return web.json_response(answer, headers=JSON_HEADERS)

    async def revoke(self, request: web.Request) -> web.Response:
        try:
            await self.server.revoke(await forms.form(request), forms.basic(request))
        except OAuthError as error:
            return refused("revocation_refused", error)
        return web.Response(status=200, headers=JSON_HEADERS)
