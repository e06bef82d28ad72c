"""The authorization server's metadata document (RFC 8414 section 2), served at
`/.well-known/oauth-authorization-server` (and at the OpenID Connect discovery path)."""

from __future__ import annotations

from typing import Any

from gateway.oauth.context import OFFLINE_ACCESS, ServerContext

CLIENT_AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")


def metadata(server: ServerContext) -> dict[str, Any]:
    """RFC 8414 authorization server metadata; `registration_endpoint` only with dynamic
    registration, and whether Client ID Metadata Documents are accepted."""
    issuer = server.settings.issuer
    scopes = sorted({s for ss in server.settings.resources.values() for s in ss})
    document: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/oauth/authorize",
        "token_endpoint": issuer + "/oauth/token",
        "revocation_endpoint": issuer + "/oauth/revoke",
        "jwks_uri": issuer + "/oauth/jwks",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "revocation_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "scopes_supported": [*scopes, OFFLINE_ACCESS],
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": server.documents is not None,
    }
    if server.settings.dynamic_registration:
        document["registration_endpoint"] = issuer + "/oauth/register"
    return document
