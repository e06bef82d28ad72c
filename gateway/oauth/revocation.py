"""Token revocation (RFC 7009). A refresh token revokes its family; an access token the
gateway minted for this client revokes its `jti`, which every route checks. Anything else
changes nothing: the endpoint answers 200 either way (section 2.2)."""

from __future__ import annotations

from typing import Any

from multidict import MultiMapping

from gateway.auth.jwt import TokenError, looks_like_jwt, parse_jwt, verify_with_any
from gateway.oauth.clients import authenticate_client
from gateway.oauth.context import ServerContext
from gateway.observability.logging import get_logger

audit = get_logger("gateway.audit")


async def revoke(
    server: ServerContext, form: MultiMapping[str], basic: tuple[str, str] | None
) -> None:
    """RFC 7009 section 2.1: revoke `token` for the authenticated client."""
    client = await authenticate_client(server, form, basic)
    token = form.get("token")
    if not token:
        return
    if looks_like_jwt(token):
        minted = _own_access_token(server, token)
        if minted is not None and minted.get("client_id") == client.client_id:
            await server.store.revoke_jti(str(minted["jti"]), float(minted["exp"]))
            audit.info("token_revoked", kind="access_token", client_id=client.client_id)
            server.on_revoked()
        return
    if await server.store.revoke(token, client_id=client.client_id):
        audit.info("token_revoked", kind="refresh_token", client_id=client.client_id)
        server.on_revoked()


def _own_access_token(server: ServerContext, token: str) -> dict[str, Any] | None:
    """The claims of an access token this gateway signed (expired or not), else None."""
    try:
        jwt = parse_jwt(token)
        verify_with_any(jwt, [key.key for key in server.keys.all() if key.kid == jwt.kid])
    except TokenError:
        return None
    claims = jwt.claims
    if claims.get("iss") != server.settings.issuer:
        return None
    if not isinstance(claims.get("jti"), str) or not isinstance(claims.get("exp"), int):
        return None
    return dict(claims)
