"""RFC 9728 OAuth 2.0 Protected Resource Metadata, one document per authenticated route."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def metadata_path(route: str) -> str:
    """RFC 9728 section 3.1: the well-known suffix goes between host and the resource's path."""
    return WELL_KNOWN + route


def metadata_document(
    *, resource: str, issuers: Sequence[str], scopes: Sequence[str], name: str
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "resource": resource,
        "authorization_servers": list(issuers),
        "bearer_methods_supported": ["header"],
        "resource_name": name,
    }
    if scopes:
        document["scopes_supported"] = list(scopes)
    return document


def metadata_handler(document: dict[str, Any]) -> Handler:
    """A handler serving one precomputed document (the config is immutable while running)."""
    body = web.json_response(document).body
    assert isinstance(body, bytes)

    async def protected_resource_metadata(request: web.Request) -> web.Response:
        return web.Response(
            body=body,
            content_type="application/json",
            headers={"Cache-Control": "public, max-age=300"},
        )

    return protected_resource_metadata
