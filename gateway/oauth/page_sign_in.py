"""Signing in for one of the gateway's own pages rather than for a client.

A connect page (`gateway.web.connect`) that must know who is signed in at the facade, and
finds the browser signed in as nobody, sends it to sign in: on the local form or at the
OpenID provider, as a client's authorization does, but with no client, consent or code behind
it. Once the user has signed in, a sign-in session starts and the browser goes back to the
page. Where it goes back to is kept in the store (`records.PageSignIn`), never taken from the
browser, and only ever a path on this gateway under `/oauth/connect/` (`returnable`): a
sign-in cannot be turned into an open redirect. The transaction is found again by its `state`
(single use, `login_lifetime`), only in the browser whose flow cookie began it, as the
client's login transactions are.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from typing import Any

from gateway.oauth.context import ServerContext
from gateway.oauth.error import OAuthError
from gateway.oauth.outcome import PageSignInFailed, Redirect
from gateway.oauth.records import SIGN_IN_STAGE, PageSignIn, names_page_sign_in
from gateway.oauth.sign_in import sign_in_time, start_session
from gateway.observability.logging import get_logger

audit = get_logger("gateway.audit")

RETURN_PREFIX = "/oauth/connect/"
_RETURNABLE = re.compile(r"/oauth/connect/[a-z0-9][a-z0-9_-]{0,62}(?:\?[A-Za-z0-9_.~=&-]{1,4000})?")
"""A connect page's path (a route name: `config.fields.NAME_PATTERN`) and its query: nothing a
browser could read as another origin (no scheme, `//`, backslash, dot segment, `@` or
fragment) or as another path."""
EXPIRED = (
    "This sign-in has expired, is not valid or was started in another browser. Open the link "
    "from your application again."
)


def returnable(path: str) -> bool:
    """Whether a page sign-in may send the browser back to `path`: a connect page of this
    gateway, with its query."""
    return _RETURNABLE.fullmatch(path) is not None


async def begin(
    server: ServerContext,
    return_to: str,
    purpose: str,
    *,
    stage: str,
    browser: str,
    code_verifier: str | None = None,
    nonce: str | None = None,
) -> str:
    """Park a page sign-in for the browser whose flow cookie digest is `browser`; its `state`
    (`ValueError` when `return_to` is not `returnable`)."""
    if not returnable(return_to) or not browser:
        raise ValueError("a page sign-in returns only to a connect page, in one browser")
    txn = PageSignIn(
        return_to=return_to,
        purpose=purpose,
        expires_at=server.clock() + server.settings.login_lifetime,
        stage=stage,
        browser=browser,
        code_verifier=code_verifier,
        nonce=nonce,
    )
    return await server.store.begin_page_sign_in(txn)


async def take(server: ServerContext, state: str, stage: str, browser: str) -> PageSignIn | None:
    """The page sign-in `state` names if it waits for `stage` in this browser (single use:
    taken whatever the answer)."""
    if not names_page_sign_in(state):
        return None
    txn = await server.store.take_page_sign_in(state, server.clock())
    if txn is None or txn.stage != stage or not browser:
        return None
    if not hmac.compare_digest(txn.browser, browser):
        return None
    if not returnable(txn.return_to):  # not written by `begin`: never followed
        audit.warning("page_sign_in_refused", reason="return_to")
        return None
    return txn


async def sign_in_local(
    server: ServerContext, state: str, username: str, password: str, browser: str
) -> Redirect | PageSignInFailed:
    """A local user's password on a page sign-in's form (single use, as a client's: a failed
    attempt gets a fresh state)."""
    if server.users is None:
        raise OAuthError("invalid_request", "There is no sign-in form here.")
    txn = await take(server, state, SIGN_IN_STAGE, browser)
    if txn is None:
        raise OAuthError("invalid_request", EXPIRED)
    user = server.users.authenticate(username, password)
    if user is None:
        fresh = await begin(server, txn.return_to, txn.purpose, stage=SIGN_IN_STAGE,
                            browser=browser)  # fmt: skip
        return PageSignInFailed(fresh, txn.purpose)
    return await signed_in(server, txn, user.username, dict(user.claims))


async def signed_in(
    server: ServerContext,
    txn: PageSignIn,
    subject: str,
    claims: Mapping[str, Any],
    auth_time: float | None = None,
) -> Redirect:
    """The user signed in (at `auth_time`, else now): a sign-in session starts (its cookie goes
    with the answer), and the browser goes back to the page. Whether this user may use that
    page is the page's decision (a connect page admits only its ticket's user)."""
    now = server.clock()
    cookie = await start_session(server, subject, claims, now, sign_in_time(now, auth_time))
    return Redirect(server.settings.issuer + txn.return_to, session=cookie)
