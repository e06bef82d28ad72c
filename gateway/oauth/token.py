"""The token endpoint (RFC 6749 section 3.2): the authorization code grant (section 4.1.3,
with the PKCE verifier, RFC 7636 section 4.5) and the refresh token grant (section 6).

A code is single use and bound to its client, redirect URI, PKCE challenge and resource; a
code redeemed wrongly is spent, and a replayed one revokes everything it issued. A refresh
token rotates on every use (OAuth 2.1 section 4.3.1); a reused one revokes its whole family.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from multidict import MultiMapping

from gateway.oauth.clients import authenticate_client
from gateway.oauth.context import OFFLINE_ACCESS, ServerContext
from gateway.oauth.error import OAuthError
from gateway.oauth.pkce import verify
from gateway.oauth.records import ClientRecord, CodeReplay, Reused, Rotated, ScopeNotGranted
from gateway.observability.logging import get_logger
from gateway.policy.grants import ATTAINABLE_SCOPE_CLAIM

audit = get_logger("gateway.audit")


async def token(
    server: ServerContext, form: MultiMapping[str], basic: tuple[str, str] | None
) -> dict[str, Any]:
    """A token request from an authenticated client: the access token response (section
    5.1), or an `OAuthError` (section 5.2)."""
    for name in form:
        if len(form.getall(name)) > 1:
            raise OAuthError("invalid_request", f"{name} is repeated")
    client = await authenticate_client(server, form, basic)
    grant_type = form.get("grant_type")
    if grant_type == "authorization_code":
        return await _redeem_code(server, client, form)
    if grant_type == "refresh_token" and "refresh_token" in client.grant_types:
        return await _refresh(server, client, form)
    raise OAuthError("unsupported_grant_type", "Unsupported grant_type")


@dataclass(frozen=True, slots=True)
class _Issue:
    """What an access token is minted for."""

    family_id: str
    subject: str
    resource: str
    scopes: frozenset[str]
    auth_time: float
    claims: Mapping[str, Any]


async def _redeem_code(
    server: ServerContext, client: ClientRecord, form: MultiMapping[str]
) -> dict[str, Any]:
    now = server.clock()
    redemption = await server.store.consume_code(form.get("code", ""), now)
    invalid = OAuthError("invalid_grant", "The authorization code is invalid or was used")
    if redemption is None or isinstance(redemption, CodeReplay):
        if redemption is not None:
            audit.warning("token_replay_detected", kind="authorization_code",
                          client_id=client.client_id)  # fmt: skip
            server.on_revoked()
        raise invalid  # a replay has revoked everything the code issued
    grant = redemption.grant
    resource = form.get("resource", grant.resource)
    if (
        grant.client_id != client.client_id
        or form.get("redirect_uri") != grant.redirect_uri
        or resource != grant.resource
        or not verify(form.get("code_verifier", ""), grant.code_challenge)
    ):
        await server.store.revoke_family(redemption.family_id)
        server.on_revoked()
        raise invalid
    family = redemption.family(now + server.settings.refresh_token_lifetime)
    issue = _Issue(family.family_id, family.subject, family.resource, grant.scopes,
                   grant.auth_time, family.claims)  # fmt: skip
    answer = await _access_token(server, client, issue, now)
    if OFFLINE_ACCESS in grant.scopes and "refresh_token" in client.grant_types:
        refresh = await server.store.start_family(family)
        if refresh is not None:  # None: a concurrent replay revoked the family (and the
            answer["refresh_token"] = refresh  # access token above): nothing more to give
    audit.info("token_issued", client_id=client.client_id, sub=grant.subject[:128],
               scopes=sorted(grant.scopes), refresh="refresh_token" in answer)  # fmt: skip
    return answer


async def _refresh(
    server: ServerContext, client: ClientRecord, form: MultiMapping[str]
) -> dict[str, Any]:
    now = server.clock()
    requested = form.get("scope")
    scopes = frozenset(requested.split()) if requested is not None else None
    outcome = await server.store.rotate(
        form.get("refresh_token", ""), now, client_id=client.client_id, scopes=scopes
    )
    if isinstance(outcome, ScopeNotGranted):
        raise OAuthError("invalid_scope", "A refresh cannot widen the granted scopes")
    if not isinstance(outcome, Rotated):  # unknown, expired, or Reused (family revoked)
        if isinstance(outcome, Reused):
            audit.warning("token_replay_detected", kind="refresh_token",
                          client_id=client.client_id)  # fmt: skip
        server.on_revoked()
        raise OAuthError("invalid_grant", "The refresh token is invalid or was used")
    grant = outcome.grant
    issue = _Issue(grant.family_id, grant.subject, grant.resource, outcome.scopes,
                   grant.auth_time, grant.claims)  # fmt: skip
    answer = await _access_token(server, client, issue, now)
    answer["refresh_token"] = outcome.refresh_token
    audit.info("token_refreshed", client_id=client.client_id, sub=grant.subject[:128],
               scopes=sorted(outcome.scopes))  # fmt: skip
    return answer


async def _access_token(
    server: ServerContext, client: ClientRecord, issue: _Issue, now: float
) -> dict[str, Any]:
    """Mint the access token and record its `jti` in the grant's family (refused when the
    family was revoked meanwhile); the token response without a refresh token."""
    lifetime = server.settings.access_token_lifetime
    resource_scopes = issue.scopes - {OFFLINE_ACCESS}
    minted = server.keys.mint_access_token(
        issuer=server.settings.issuer,
        subject=issue.subject,
        client_id=client.client_id,
        audience=issue.resource,
        scopes=resource_scopes,
        lifetime=lifetime,
        now=now,
        auth_time=issue.auth_time,
        extra_claims=_attainable_claim(server, issue.resource, issue.claims),
    )
    if not await server.store.record_jti(issue.family_id, minted.jti, minted.expires_at):
        raise OAuthError("invalid_grant", "The grant has been revoked")
    answer: dict[str, Any] = {
        "access_token": minted.token,
        "token_type": "Bearer",
        "expires_in": lifetime,
    }
    if resource_scopes:
        answer["scope"] = " ".join(sorted(issue.scopes))
    return answer


def _attainable_claim(
    server: ServerContext, resource: str, claims: Mapping[str, Any]
) -> dict[str, str]:
    """The user's ceiling on `resource` from the grant rules now, for the route's lists
    (`ATTAINABLE_SCOPE_CLAIM`); only scopes the route can require, to say no more."""
    ceiling = server.grants.ceiling(claims)
    relevant = server.resource_scopes(resource)
    if relevant is not None:
        ceiling &= relevant
    return {ATTAINABLE_SCOPE_CLAIM: " ".join(sorted(ceiling))}
