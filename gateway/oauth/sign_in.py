"""Signing in: on the local form or back from the upstream provider, and the sign-in session
that spares the next sign-in (OpenID Connect Core section 3.1.2.1 for `prompt=login` and
`max_age`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.oauth.authorize import begin, issue_code, take
from gateway.oauth.clients import describe
from gateway.oauth.context import ServerContext
from gateway.oauth.error import OAuthError
from gateway.oauth.grant import grantable, record_consent
from gateway.oauth.outcome import Redirect, SignInFailed, SignInOutcome
from gateway.oauth.records import SIGN_IN_STAGE, AuthorizationRequest, SignInSession
from gateway.observability.logging import get_logger

audit = get_logger("gateway.audit")


async def sign_in_local(
    server: ServerContext,
    state: str,
    username: str,
    password: str,
    browser: str,
) -> SignInOutcome:
    """Check a local user's password for the sign-in form `state` (single use: a failed
    attempt gets a fresh state, so a form cannot be replayed)."""
    if server.users is None:  # users sign in at the upstream provider
        raise OAuthError("invalid_request", "There is no sign-in form here.")
    txn = await take(server, state, SIGN_IN_STAGE, browser)
    if txn is None:
        raise OAuthError("invalid_request", "This sign-in has expired or belongs to another "
                         "browser. Start again from your application.")  # fmt: skip
    user = server.users.authenticate(username, password)
    if user is None:
        fresh = await begin(server, txn.request, stage=SIGN_IN_STAGE, browser=browser)
        return SignInFailed(fresh, await describe(server, txn.request))
    return await signed_in(server, txn.request, user.username, dict(user.claims))


async def signed_in(
    server: ServerContext,
    request: AuthorizationRequest,
    subject: str,
    claims: Mapping[str, Any],
    auth_time: float | None = None,
) -> Redirect:
    """The user signed in after approving: a sign-in session starts (its cookie goes with
    the answer); scopes no grant rule gives them are refused, else the client gets a code.
    `auth_time`: when the user signed in, if before now (at the provider, which reused a sign-in
    of its own); the session, the code and the tokens carry it, so `max_age` is measured from
    it."""
    now = server.clock()
    signed_in_at = sign_in_time(now, auth_time)
    cookie = await start_session(server, subject, claims, now, signed_in_at)
    approved = await server.store.consented_scopes(subject, request.client_id, now)
    granted = grantable(server, request, subject, claims, approved)
    if isinstance(granted, Redirect):
        return Redirect(granted.location, session=cookie)
    await record_consent(server, granted, subject)
    location = await issue_code(server, granted, subject, claims, signed_in_at)
    return Redirect(location, session=cookie)


def sign_in_time(now: float, auth_time: float | None) -> float:
    """When the user signed in: `auth_time` (at the provider), never later than now."""
    return now if auth_time is None else min(auth_time, now)


async def start_session(
    server: ServerContext, subject: str, claims: Mapping[str, Any], now: float, auth_time: float
) -> str | None:
    """A new sign-in session's cookie value (the user signed in at `auth_time`), or None when
    sessions are off."""
    if server.settings.session_idle <= 0:
        return None
    session = SignInSession(
        subject=subject,
        auth_time=auth_time,
        expires_at=now + server.settings.session_lifetime,
        last_used=now,
        claims=claims,
    )
    return await server.store.start_session(session, server.settings.session_idle)


async def session(server: ServerContext, cookie: str | None) -> SignInSession | None:
    """The live sign-in session a cookie value names (marked used), or None."""
    if not cookie or server.settings.session_idle <= 0:
        return None
    return await server.store.find_session(cookie, server.clock(), server.settings.session_idle)


async def sign_out(server: ServerContext, cookie: str | None) -> bool:
    """End the session `cookie` names; whether there was a live one."""
    if not cookie:
        return False
    live = await session(server, cookie)
    await server.store.end_session(cookie)
    if live is not None:
        audit.info("signed_out", sub=live.subject[:128])
    return live is not None


def fresh_sign_in_needed(
    server: ServerContext, request: AuthorizationRequest, session: SignInSession | None
) -> bool:
    """No session, or the client asks for a new sign-in (`prompt=login`, or `max_age`
    seconds passed since the last one; OpenID Connect Core section 3.1.2.1)."""
    if session is None or "login" in request.prompt:
        return True
    return request.max_age is not None and server.clock() - session.auth_time > request.max_age
