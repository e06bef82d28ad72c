"""The facade's HTML pages: the consent and sign-in forms, the error page, and the redirect
that ends a flow. Every one carries `PAGE_HEADERS`: `Cache-Control: no-store` and a
Content-Security-Policy that forbids framing (clickjacking) and any script."""

from __future__ import annotations

import html
from collections.abc import Mapping

from aiohttp import web

from gateway.oauth.outcome import ConsentNeeded, Described

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    # Not no-referrer: under it browsers send `Origin: null` with the pages' own form posts,
    # which the edge's Origin check refuses (403). same-origin still sends nothing elsewhere.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
PROVIDER_UNUSABLE = (
    "<p>The identity provider is not set up in a way this server can use. "
    "Tell the administrator.</p>"
)
PROVIDER_UNREACHABLE = "<p>The identity provider cannot be reached right now. Try again later.</p>"
SIGN_OUT_FORM = (
    "<p>Sign out of this gateway in this browser. Applications keep the access they "
    "were given until it expires or is revoked.</p>"
    '<form method="post" action="/oauth/sign-out">'
    '<button type="submit">Sign out</button></form>'
)

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}"
    "label,input,button{display:block;font-size:1rem;margin:.5rem 0}"
    "input{width:100%;padding:.4rem}button{padding:.5rem 1rem}"
    ".row{display:flex;gap:1rem}.error{color:#a00}"
)


def page(status: int, title: str, body: str) -> web.Response:
    """An HTML page: `title` (escaped here) and `body` (HTML, escaped by the caller)."""
    text = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )
    return web.Response(
        status=status, text=text, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS
    )


def error_page(status: int, description: str) -> web.Response:
    """The "Cannot continue" page, saying why."""
    return page(status, "Cannot continue", f"<p>{html.escape(description)}</p>")


def redirect(location: str) -> web.Response:
    """A 302 to `location` (the end of a flow, or the upstream provider's sign-in)."""
    return web.Response(status=302, headers={**PAGE_HEADERS, "Location": location})


def _hidden(fields: Mapping[str, str]) -> str:
    return "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in fields.items()
    )


def _asks(described: Described) -> str:
    """ "<client> ... <server> (<route>)", escaped, for the pages' first line."""
    return (
        f"<strong>{html.escape(described.client_name)}</strong> wants to use the MCP server "
        f"<strong>{html.escape(described.resource_name)}</strong> "
        f"(<code>{html.escape(described.route)}</code>) on your behalf"
    )


def sign_in_page(state: str, described: Described, *, failed: bool = False) -> web.Response:
    """The local sign-in form for the parked request `state` (401 after a wrong password)."""
    return _sign_in_form(state, f"{_asks(described)}. Sign in to continue.", failed=failed)


def page_sign_in_page(state: str, purpose: str, *, failed: bool = False) -> web.Response:
    """The local sign-in form of a page sign-in `state`, saying what it is for (`purpose`,
    plain text) (401 after a wrong password)."""
    return _sign_in_form(state, f"Sign in to this gateway to {html.escape(purpose)}.",
                         failed=failed)  # fmt: skip


def _sign_in_form(state: str, why: str, *, failed: bool) -> web.Response:
    """The sign-in form posting `state`; `why` is HTML, escaped by the caller."""
    error = '<p class="error" role="alert">Wrong user name or password.</p>' if failed else ""
    body = (
        f"{error}<p>{why}</p>"
        '<form method="post" action="/oauth/sign-in">'
        f"{_hidden({'state': state})}"
        '<label for="username">User name</label>'
        '<input id="username" name="username" autocomplete="username" required autofocus>'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" '
        'autocomplete="current-password" required>'
        '<button type="submit">Sign in</button></form>'
    )
    return page(401 if failed else 200, "Sign in", body)


def consent_page(outcome: ConsentNeeded) -> web.Response:
    """The consent form: who asks, for what, where the user goes back to."""
    described = outcome.described
    scopes = "".join(
        f"<li><code>{html.escape(scope)}</code>"
        + (f": {html.escape(description)}" if description else "")
        + "</li>"
        for scope, description in outcome.scopes
    )
    offline = (
        "<p>It also asks to keep this access when you are away.</p>" if outcome.offline else ""
    )
    user = (
        f"<p>Signed in as <strong>{html.escape(outcome.user)}</strong> "
        '(<a href="/oauth/sign-out">sign out</a>).</p>'
        if outcome.user is not None
        else ""
    )
    body = (
        f"<p>{_asks(described)}.</p>"
        f"<p>This application {html.escape(described.client_origin)}.</p>"
        f"<p>After you decide, you go back to <strong>{html.escape(described.redirect_host)}"
        "</strong>.</p>"
        f"<p>It asks for:</p><ul>{scopes}</ul>{offline}{user}"
        '<form method="post" action="/oauth/consent">'
        f"{_hidden({'state': outcome.state})}"
        '<div class="row">'
        '<button type="submit" name="decision" value="approve">Approve</button>'
        '<button type="submit" name="decision" value="deny">Deny</button>'
        "</div></form>"
    )
    return page(200, "Approve access", body)
