"""Dynamic client registration (RFC 7591): a client registers itself, its metadata checked by
`gateway.oauth.client_metadata` (the same rules a metadata document or the config meets)."""

from __future__ import annotations

from typing import Any

from gateway.oauth.client_metadata import ClientMetadata, ClientMetadataError, parse_client_metadata
from gateway.oauth.context import ServerContext
from gateway.oauth.error import OAuthError
from gateway.oauth.records import NO_CLIENT_AUTH, ClientRecord, digest


async def register(
    server: ServerContext, document: Any, client_id: str, secret: str | None
) -> dict[str, Any]:
    """RFC 7591 section 3: register a client under `client_id` (and `secret` if it needs
    one); the client information response (section 3.2.1), or an `OAuthError` (3.2.2)."""
    if not server.settings.dynamic_registration:
        raise OAuthError("access_denied", "Dynamic registration is disabled", 403)
    try:
        metadata = parse_client_metadata(document)
    except ClientMetadataError as exc:
        raise OAuthError(exc.error, exc.description) from None
    public = metadata.token_endpoint_auth_method == NO_CLIENT_AUTH
    record = ClientRecord(
        client_id=client_id,
        redirect_uris=tuple(metadata.redirect_uris),
        created_at=server.clock(),
        grant_types=tuple(metadata.grant_types),
        token_endpoint_auth_method=metadata.token_endpoint_auth_method,
        client_name=metadata.client_name,
        secret_hash=None if public else digest(secret or ""),
    )
    await server.store.save_client(record)
    answer = _information(record, metadata)
    if not public:
        answer["client_secret"] = secret
        answer["client_secret_expires_at"] = 0
    return answer


def _information(record: ClientRecord, metadata: ClientMetadata) -> dict[str, Any]:
    """The client information response (RFC 7591 section 3.2.1), secret aside."""
    answer: dict[str, Any] = {
        "client_id": record.client_id,
        "client_id_issued_at": int(record.created_at),
        "redirect_uris": list(record.redirect_uris),
        "grant_types": list(record.grant_types),
        "response_types": ["code"],
        "token_endpoint_auth_method": record.token_endpoint_auth_method,
    }
    if metadata.client_name is not None:
        answer["client_name"] = metadata.client_name
    if metadata.scope:
        answer["scope"] = " ".join(metadata.scope)
    return answer
