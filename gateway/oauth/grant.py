"""What a signed-in user gives a client: the request narrowed to what the grant rules allow
the user, and the consent remembered for the next time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gateway.oauth.authorize import error_redirect
from gateway.oauth.context import OFFLINE_ACCESS, ServerContext
from gateway.oauth.outcome import Redirect
from gateway.oauth.records import AuthorizationRequest
from gateway.observability.logging import get_logger

audit = get_logger("gateway.audit")

CONSENT_LIFETIME = 30 * 86_400.0


def grantable(
    server: ServerContext,
    request: AuthorizationRequest,
    subject: str,
    claims: Mapping[str, Any],
    approved: frozenset[str],
) -> AuthorizationRequest | Redirect:
    """The request narrowed to what the grant rules give this user, or `access_denied`.

    RFC 6749 section 3.3: the server may issue less than was asked (the token response
    then names what it issued). A request that asks for scopes the user cannot get is
    narrowed when it still gains the client something beyond what the user approved for
    it before (a client that asks for every scope a route lists at its first sign-in);
    it is refused, naming the scopes, when it gains nothing (a step-up the user can never
    get: a narrowed token would only send the client round again)."""
    wanted = request.scopes - {OFFLINE_ACCESS}
    allowed = server.grants.grant(claims, wanted)
    missing = sorted(wanted - allowed)
    if not missing:
        return request
    narrowed = bool(allowed) and not allowed <= approved
    audit.info("grant_refused", client_id=request.client_id, sub=subject[:128],
               scopes=missing, narrowed=narrowed)  # fmt: skip
    if not narrowed:
        return error_redirect(
            server, request, "access_denied", f"You may not be granted: {' '.join(missing)}"
        )
    return replace(request, scopes=allowed | (request.scopes & {OFFLINE_ACCESS}))


async def record_consent(
    server: ServerContext, request: AuthorizationRequest, subject: str
) -> None:
    """Remember the approval of the request's resource scopes for `CONSENT_LIFETIME`."""
    await server.store.record_consent(
        subject,
        request.client_id,
        request.scopes - {OFFLINE_ACCESS},
        server.clock() + CONSENT_LIFETIME,
    )
