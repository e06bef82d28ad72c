"""Consent first: the user approves a client's request before anyone signs in or any request
reaches an upstream provider (MCP security best practices: confused deputy). With a live
sign-in session, the grant rules and earlier consent are known at once, so only new scopes
are asked for."""

from __future__ import annotations

from gateway.oauth.authorize import begin, error_redirect, issue_code, take
from gateway.oauth.clients import describe
from gateway.oauth.context import OFFLINE_ACCESS, ServerContext
from gateway.oauth.error import OAuthError
from gateway.oauth.grant import grantable, record_consent
from gateway.oauth.outcome import ConsentNeeded, Redirect, SignInNeeded
from gateway.oauth.records import CONSENT_STAGE, AuthorizationRequest, SignInSession
from gateway.oauth.sign_in import fresh_sign_in_needed
from gateway.observability.logging import get_logger

audit = get_logger("gateway.audit")


async def authorize(
    server: ServerContext,
    request: AuthorizationRequest,
    session: SignInSession | None,
    browser: str,
) -> Redirect | ConsentNeeded:
    """A checked request: consent first (before any sign-in, so no client reaches the
    provider unapproved). With a live sign-in session refused scopes end here, approved ones
    go straight back to the client, new ones need consent only."""
    if fresh_sign_in_needed(server, request, session):
        if "none" in request.prompt:
            _refused_silently(request, "login_required", session)
            return error_redirect(server, request, "login_required", "The user must sign in")
        return await _ask_consent(server, request, request.scopes, browser, None)
    assert session is not None
    approved = await server.store.consented_scopes(
        session.subject, request.client_id, server.clock()
    )
    granted = grantable(server, request, session.subject, session.claims, approved)
    if isinstance(granted, Redirect):
        return granted
    request = granted
    wanted = request.scopes - {OFFLINE_ACCESS}
    new = request.scopes - approved - {OFFLINE_ACCESS}
    if "consent" in request.prompt and not new:
        new = wanted
    if not new:
        return Redirect(await issue_code(server, request, session.subject, session.claims,
                                         session.auth_time))  # fmt: skip
    if "none" in request.prompt:
        _refused_silently(request, "consent_required", session)
        return error_redirect(
            server, request, "consent_required", "The user must approve the request"
        )
    return await _ask_consent(server, request, new, browser, session)


def _refused_silently(
    request: AuthorizationRequest, error: str, session: SignInSession | None
) -> None:
    """`prompt=none` that only the user could have answered: `login_required` (no sign-in
    session, or one too old for the request) or `consent_required` (scopes not yet approved).
    Info, not warning: any client may ask."""
    audit.info(
        "silent_authorization_refused",
        error=error,
        client_id=request.client_id,
        sub=session.subject[:128] if session is not None else None,
        scopes=sorted(request.scopes),
    )


async def _ask_consent(
    server: ServerContext,
    request: AuthorizationRequest,
    scopes: frozenset[str],
    browser: str,
    session: SignInSession | None,
) -> ConsentNeeded:
    state = await begin(server, request, stage=CONSENT_STAGE, browser=browser, session=session)
    shown = sorted(scopes - {OFFLINE_ACCESS}) or sorted(scopes)
    descriptions = server.settings.scope_descriptions
    return ConsentNeeded(
        state=state,
        described=await describe(server, request),
        scopes=tuple((scope, descriptions.get(scope, "")) for scope in shown),
        offline=OFFLINE_ACCESS in request.scopes,
        user=None if session is None else session.subject,
    )


async def consent(
    server: ServerContext,
    state: str,
    approve: bool,
    browser: str,
    session: SignInSession | None,
) -> Redirect | SignInNeeded:
    """The user's decision on the consent form `state`, sent from the browser it was shown
    in: denied goes back to the client; approved goes on to sign-in, or (with the sign-in
    session the form was shown for) straight to a code."""
    txn = await take(server, state, CONSENT_STAGE, browser)
    if txn is None:
        raise OAuthError("invalid_request", "This approval has expired or belongs to another "
                         "browser. Start again from your application.")  # fmt: skip
    request = txn.request
    if not approve:
        audit.info("consent_denied", client_id=request.client_id)
        return error_redirect(
            server, request, "access_denied", "The user did not approve the request"
        )
    audit.info("consent_given", client_id=request.client_id, sub=txn.subject,
               scopes=sorted(request.scopes))  # fmt: skip
    if txn.subject is None or session is None or session.subject != txn.subject:
        return SignInNeeded(request)
    await record_consent(server, request, txn.subject)
    return Redirect(await issue_code(server, request, txn.subject, session.claims,
                                     session.auth_time))  # fmt: skip
