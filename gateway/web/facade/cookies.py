"""The facade's two cookies, both HttpOnly, SameSite=Lax, Path=/ and random (256 bits; the
store keeps only their digests)."""

from __future__ import annotations

import re
import secrets
from urllib.parse import urlsplit

from aiohttp import web

from gateway.config.auth import AuthorizationServerSettings
from gateway.oauth.records import digest

FLOW_COOKIE = "mcp-gateway-flow"
SESSION_COOKIE = "mcp-gateway-session"
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_-]{43}$")


class Cookies:
    """The facade's two cookies:

    - the *flow* cookie binds each step of an authorization (consent, sign-in form, upstream
      callback) to the browser that started it;
    - the *session* cookie names the browser's sign-in session.

    With an https `public_url` they are `Secure` and named with the `__Host-` prefix (the
    browser then refuses them from any other host or path). A plain-http `public_url` (a
    loopback demo or test) gets the names without the prefix and no `Secure`, which the prefix
    requires and which browsers would not send back over http.
    """

    def __init__(self, issuer: str, settings: AuthorizationServerSettings) -> None:
        self.secure = urlsplit(issuer).scheme == "https"
        prefix = "__Host-" if self.secure else ""
        self.flow_name = prefix + FLOW_COOKIE
        self.session_name = prefix + SESSION_COOKIE
        self._flow_age = int(settings.login_lifetime)
        self._session_age = int(settings.sign_in_session.max_lifetime)

    def flow(self, request: web.Request) -> str:
        """This browser's flow cookie value, or a new one (set it with `set_flow`)."""
        value = request.cookies.get(self.flow_name, "")
        return value if _COOKIE_VALUE.fullmatch(value) else secrets.token_urlsafe(32)

    def flow_digest(self, request: web.Request) -> str:
        """The digest of this browser's flow cookie ("" without one: matches nothing)."""
        value = request.cookies.get(self.flow_name, "")
        return digest(value) if _COOKIE_VALUE.fullmatch(value) else ""

    def session(self, request: web.Request) -> str | None:
        """This browser's session cookie value, if it sent one."""
        return request.cookies.get(self.session_name)

    def set_flow(self, response: web.StreamResponse, value: str) -> None:
        self._set(response, self.flow_name, value, self._flow_age)

    def set_session(self, response: web.StreamResponse, value: str) -> None:
        self._set(response, self.session_name, value, self._session_age)

    def clear_session(self, response: web.StreamResponse) -> None:
        self._set(response, self.session_name, "", 0)

    def _set(self, response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path="/", secure=self.secure, httponly=True,
            samesite="Lax",
        )  # fmt: skip
