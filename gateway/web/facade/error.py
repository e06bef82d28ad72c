"""The one place where the facade's errors become responses: an `OAuthError` as a redirect
back to the client, an error page, or a JSON body; and the 503 of a state store outage."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.oauth.error import OAuthError
from gateway.observability.logging import get_logger
from gateway.store.kv import StoreUnavailableError
from gateway.web.facade import pages

audit = get_logger("gateway.audit")

JSON_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_REASON_CHARS = 200
"""Refusal reasons can quote a parameter name the client chose: logged this long at most."""
Handler = Callable[[web.Request], Awaitable[web.Response]]


def render(error: OAuthError, *, page: bool = False) -> web.Response:
    """`error` as the client learns it: through its redirect URI when the error carries a
    `location`, else as the "Cannot continue" page on a browser's page (`page`), else as a
    JSON body (RFC 6749 section 5.2), with `WWW-Authenticate: Basic` on a 401."""
    if error.location is not None:
        return pages.redirect(error.location)
    if page:
        return pages.error_page(error.status, error.description)
    headers = dict(JSON_HEADERS)
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="oauth"'
    return web.json_response(error.body(), status=error.status, headers=headers)


def refused(event: str, error: OAuthError, *, page: bool = False) -> web.Response:
    """Log why a request was refused (info: the client's own doing) and `render` the error.
    A redirect logs its code, a page its reason, a JSON answer both."""
    reason = error.description[:MAX_REASON_CHARS]
    if error.location is not None:
        audit.info(event, error=error.error)
    elif page:
        audit.info(event, reason=reason)
    else:
        audit.info(event, error=error.error, reason=reason)
    return render(error, page=page)


def fail_closed(handler: Handler, *, page: bool = False) -> Handler:
    """`handler`, answering 503 with `Retry-After` when the state store is down: an OAuth
    JSON error (`temporarily_unavailable`) or, for pages, a page saying to try again. Nothing
    that needed the store is answered as if it had been checked."""

    async def guarded(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except StoreUnavailableError:
            response = _unavailable(page)
            response.headers["Retry-After"] = str(StoreUnavailableError.retry_after)
            return response

    return guarded


def _unavailable(as_page: bool) -> web.Response:
    if as_page:
        return pages.page(
            503, "Try again shortly", "<p>Signing in is unavailable for a moment.</p>"
        )
    return render(OAuthError("temporarily_unavailable", "Try again shortly", 503))
