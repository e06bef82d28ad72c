"""The connect pages of `user_oauth` routes: where a URL elicitation sends the user to connect
their account at the route's third-party provider, the provider's callback, and disconnect.

- `GET /oauth/connect/<route>?ticket=...`: checks the connect ticket. When the ticket's user
  signed in through the gateway's own authorization server (facade) and sign-in sessions are
  on, the browser must hold that user's sign-in session (another signed-in user is refused)
  and goes straight on to the provider; a browser signed in as nobody is sent to the facade's
  sign-in and comes back to this page (`gateway.web.facade.page_sign_in`).
  Otherwise the link is a bearer link for its lifetime (10 minutes): the page names the
  provider, the route and the user the link was made for, and the user confirms with a button
  (`POST` to the same path, accepted only with the gateway's own `Origin`), so a link someone
  else sends is never followed without a click that shows whose it is.
- Going on to the provider binds the flow to this browser (a random HttpOnly, SameSite=Lax
  cookie, `__Host-` and Secure behind https) and keeps a single-use `state` with the PKCE
  verifier (`gateway.upstream_auth.connect_flow`).
- `GET /oauth/connect/<route>/callback`: `iss` first, then `state` (only in the browser that
  began), then the code.
- `POST /oauth/connect/<route>/disconnect`: with the bearer token the route accepts
  (no cookie, so no cross-site request can use it); revokes at the provider when it can and
  deletes the grant. Answers JSON `{"disconnected": bool}`.

Every page is `Cache-Control: no-store`; provider text is never shown or logged.
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Sequence
from urllib.parse import urlencode

from aiohttp import hdrs, web

from gateway.auth.authenticator import RouteAuthenticator
from gateway.errors import CredentialRefusedError, NotFoundError
from gateway.oauth.error import OAuthError
from gateway.observability.logging import get_logger
from gateway.upstream_auth.connect_flow import (
    STATE_LIFETIME,
    ConnectRefusedError,
    TooManyStartsError,
    callback_path,
    disconnect_path,
    start_path,
)
from gateway.upstream_auth.grants import user_key
from gateway.upstream_auth.provider import ProviderUnavailableError
from gateway.upstream_auth.tickets import ConnectTicket, TicketError
from gateway.upstream_auth.user_oauth import UserOAuthCredential
from gateway.web.facade import forms, pages
from gateway.web.facade.error import fail_closed
from gateway.web.facade.page_sign_in import PAGE_SIGN_INS, PageSignIns
from gateway.web.http_route import HttpRoute
from gateway.web.route import Route

audit = get_logger("gateway.audit")

CONNECT_COOKIE = "mcp-gateway-connect"
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_-]{43}$")
RETRY_HINT = "Retry the request in your application to get a new link."
_REFUSALS = {
    "iss_missing": "The provider's answer could not be verified.",
    "iss_mismatch": "The provider's answer could not be verified.",
    "iss_repeated": "The provider's answer could not be verified.",
    "state_unknown": "This connection has expired, was already completed, or was started in "
    "another browser.",
    "provider_error": "The provider did not grant access.",
    "code_missing": "The provider's answer could not be used.",
    "code_refused": "The provider's answer could not be used.",
}


class BindingCookie:
    """The cookie that binds a connect flow to the browser that started it."""

    def __init__(self, public_base: str) -> None:
        self.secure = public_base.startswith("https://")
        self.name = ("__Host-" if self.secure else "") + CONNECT_COOKIE

    def sent(self, request: web.Request) -> str:
        value = request.cookies.get(self.name, "")
        return value if _COOKIE_VALUE.fullmatch(value) else ""

    def set(self, response: web.StreamResponse, value: str) -> None:
        response.set_cookie(
            self.name, value, max_age=STATE_LIFETIME, path="/", secure=self.secure,
            httponly=True, samesite="Lax",
        )  # fmt: skip


class FacadeSessions:
    """Who is signed in at the gateway's own authorization server, in a browser, and the
    facade's sign-in for a browser signed in as nobody."""

    def __init__(self, sign_ins: PageSignIns) -> None:
        self.sign_ins = sign_ins

    def vouches_for(self, ticket: ConnectTicket) -> bool:
        """Whether the facade's sign-in session can tell this ticket's user in a browser."""
        settings = self.sign_ins.server.settings
        return settings.session_idle > 0 and ticket.issuer == settings.issuer

    async def subject(self, request: web.Request) -> str | None:
        return await self.sign_ins.subject(request)


class ConnectPages:
    """The three endpoints of one `user_oauth` route."""

    def __init__(
        self,
        credential: UserOAuthCredential,
        authenticator: RouteAuthenticator | None,
        cookie: BindingCookie,
        sessions: FacadeSessions | None,
        origin: str,
    ) -> None:
        self.credential = credential
        self.flow = credential.connect
        self.upstream = credential.connect.upstream
        self._authenticator = authenticator
        self._cookie = cookie
        self._sessions = sessions
        self._origin = origin
        """The gateway's own origin: the only one the confirmation form may come from."""

    async def start(self, request: web.Request) -> web.Response:
        """GET: the link the elicitation named. A browser signed in at the facade as the
        ticket's user goes straight to the provider; otherwise the user confirms first, on a
        page naming the provider, the route and the user the link was made for (a link an
        attacker sends is not followed without a click, and shows whose it is)."""
        texts = request.query.getall("ticket", [])
        ticket = self._ticket(texts)
        if isinstance(ticket, web.Response):
            return ticket
        if self._sessions is not None and self._sessions.vouches_for(ticket):
            return await self._begin(request, ticket, texts[0])
        return self._confirmation(ticket, texts[0])

    async def confirm(self, request: web.Request) -> web.Response:
        """POST from the confirmation page (its own origin only), then as `start`."""
        reason = forms.foreign_form_post(request.headers.getall(hdrs.ORIGIN, []), self._origin)
        if reason is not None:
            audit.warning("upstream_connect_refused", upstream=self.upstream,
                          reason=f"form_origin_{reason}")  # fmt: skip
            return pages.error_page(403, f"This form can only be sent from this server's own "
                                    f"page. {RETRY_HINT}")  # fmt: skip
        try:
            form = await forms.form(request)
        except OAuthError as error:
            return pages.error_page(error.status, error.description)
        texts = form.getall("ticket", [])
        ticket = self._ticket(texts)
        if isinstance(ticket, web.Response):
            return ticket
        return await self._begin(request, ticket, texts[0])

    def _ticket(self, values: list[str]) -> ConnectTicket | web.Response:
        """The one valid ticket among `values`, or the page refusing it."""
        try:
            if len(values) != 1:
                raise TicketError("malformed")
            return self.credential.tickets.check(values[0])
        except TicketError as error:
            audit.info("upstream_connect_refused", upstream=self.upstream, reason=error.reason)
            return pages.error_page(400, f"This link is not valid or has expired. {RETRY_HINT}")

    def _confirmation(self, ticket: ConnectTicket, text: str) -> web.Response:
        body = (
            f"<p>Connect your account at <strong>{html.escape(self.credential.provider_name)}"
            f"</strong> to the MCP server <strong>{html.escape(self.upstream)}</strong> of "
            f"this gateway, for its user <strong>{html.escape(ticket.subject)}</strong>.</p>"
            "<p>Continue only if your application just asked you to; otherwise close this "
            "page.</p>"
            f'<form method="post" action="{html.escape(start_path(self.upstream))}">'
            f'<input type="hidden" name="ticket" value="{html.escape(text)}">'
            '<button type="submit">Connect</button></form>'
        )
        return pages.page(200, "Connect your account", body)

    async def _begin(self, request: web.Request, ticket: ConnectTicket, text: str) -> web.Response:
        """Off to the provider, the flow bound to this browser (and, with the facade, to the
        signed-in user); `text` is the ticket as the link carried it."""
        refusal = await self._held_by_ticket_user(request, ticket, text)
        if refusal is not None:
            return refusal
        browser = self._cookie.sent(request) or secrets.token_urlsafe(32)
        try:
            location = await self.flow.begin(ticket, browser)
        except ProviderUnavailableError:
            audit.warning("upstream_connect_unavailable", upstream=self.upstream)
            return _unavailable()
        except TooManyStartsError:
            audit.warning("upstream_connect_refused", upstream=self.upstream,
                          reason="too_many_starts", sub=ticket.subject[:128])  # fmt: skip
            page = pages.error_page(429, "Too many attempts to connect this account. Wait a "
                                    f"minute, then open the link again. {RETRY_HINT}")  # fmt: skip
            page.headers["Retry-After"] = "60"
            return page
        response = pages.redirect(location)
        self._cookie.set(response, browser)
        return response

    async def _held_by_ticket_user(
        self, request: web.Request, ticket: ConnectTicket, text: str
    ) -> web.Response | None:
        """None when this browser is signed in at the facade as the ticket's user (or there
        are no facade sessions: the binding cookie alone then holds the flow); else a refusal
        page (another user), or off to sign in and back to this page with the same ticket
        (nobody)."""
        sessions = self._sessions
        if sessions is None or not sessions.vouches_for(ticket):
            return None
        subject = await sessions.subject(request)
        if subject is None:  # signed in as nobody: sign in, then back here
            audit.info("upstream_connect_sign_in_needed", upstream=self.upstream)
            here = f"{start_path(self.upstream)}?{urlencode({'ticket': text})}"
            purpose = (f"connect your account at {self.credential.provider_name} to the MCP "
                       f"server {self.upstream}")  # fmt: skip
            return await sessions.sign_ins.start(request, here, purpose)
        if subject != ticket.subject:
            audit.warning("upstream_connect_refused", upstream=self.upstream,
                          reason="other_user", sub=subject[:128])  # fmt: skip
            return pages.error_page(403, "This link was made for another user of this gateway.")
        return None

    async def callback(self, request: web.Request) -> web.Response:
        count = self.credential.count
        try:
            connected = await self.flow.finish(request.query, self._cookie.sent(request))
        except ConnectRefusedError as error:
            count("failed")
            audit.warning("upstream_connect_refused", upstream=self.upstream, reason=error.reason)
            return pages.error_page(400, f"{_REFUSALS[error.reason]} {RETRY_HINT}")
        except ProviderUnavailableError:
            count("failed")
            audit.warning("upstream_connect_unavailable", upstream=self.upstream)
            return _unavailable()
        audit.info(
            "upstream_account_connected", upstream=self.upstream, sub=connected.subject[:128]
        )
        return pages.page(200, "Account connected", "<p>Your account is connected for the MCP "
                          f"server <strong>{html.escape(self.upstream)}</strong>. You can close "
                          "this page and return to your application.</p>")  # fmt: skip

    async def disconnect(self, request: web.Request) -> web.Response:
        if self._authenticator is None:  # the config refuses user_oauth on anonymous routes
            raise NotFoundError("disconnect on a route without authentication")
        principal = await self._authenticator.authenticate(
            request.headers.getall("Authorization", [])
        )
        user = user_key(principal)
        if user is None:
            raise CredentialRefusedError("caller's token has no sub", message="The caller's "
                                         "token names no user")  # fmt: skip
        removed = await self.flow.keeper.disconnect(user)  # counted by the keeper
        audit.info("upstream_account_disconnected", upstream=self.upstream,
                   sub=(principal.subject or "")[:128], had_grant=removed)  # fmt: skip
        return web.json_response({"disconnected": removed}, headers={"Cache-Control": "no-store"})


def _unavailable() -> web.Response:
    response = pages.page(503, "Try again shortly", "<p>The provider cannot be reached right "
                          "now. Try again in a moment.</p>")  # fmt: skip
    response.headers["Retry-After"] = "5"
    return response


def install_connect_pages(app: web.Application, routes: Sequence[Route], public_base: str) -> None:
    """The connect pages of every route whose credential is `user_oauth`; with the facade
    (installed first: `PAGE_SIGN_INS`), bound to its sign-in sessions."""
    cookie = BindingCookie(public_base)
    sign_ins = app.get(PAGE_SIGN_INS)
    sessions = None if sign_ins is None else FacadeSessions(sign_ins)
    for route in routes:
        if not isinstance(route, HttpRoute):
            continue
        credential = route.credential
        if not isinstance(credential, UserOAuthCredential):
            continue
        origin = forms.origin_of(public_base)
        endpoints = ConnectPages(credential, route.authenticator, cookie, sessions, origin)
        name = credential.connect.upstream
        app.router.add_get(start_path(name), fail_closed(endpoints.start, page=True),
                           allow_head=False)  # fmt: skip
        app.router.add_post(start_path(name), fail_closed(endpoints.confirm, page=True))
        app.router.add_get(callback_path(name), fail_closed(endpoints.callback, page=True),
                           allow_head=False)  # fmt: skip
        app.router.add_post(disconnect_path(name), endpoints.disconnect)
