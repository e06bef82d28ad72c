"""RFC 9728 OAuth 2.0 Protected Resource Metadata, one document per authenticated route."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def metadata_path(route: str) -> str:
    """RFC 9728 section 3.1: the well-known suffix goes between host and the resource's path."""
    return WELL_KNOWN + route


def metadata_document(
    *, resource: str, issuers: Sequence[str], scopes: Iterable[str], name: str
) -> dict[str, Any]:
    """The document; `scopes_supported` lists every scope the route's policy can require
    (sorted), while 401 challenges ask only for the baseline (least privilege)."""
    document: dict[str, Any] = {
        "resource": resource,
        "authorization_servers": list(issuers),
        "bearer_methods_supported": ["header"],
        "resource_name": name,
    }
    listed = sorted(scopes)
    if listed:
        document["scopes_supported"] = listed
    return document


def metadata_handler(
    document: Callable[..., dict[str, Any]], scopes: Callable[[], Iterable[str]]
) -> Handler:
    """A handler serving `document(scopes=scopes())`: the scopes follow policy reloads."""

    async def protected_resource_metadata(request: web.Request) -> web.Response:
        return web.Response(
            body=json.dumps(document(scopes=scopes())).encode(),
            content_type="application/json",
            headers={"Cache-Control": "public, max-age=300"},
        )

    return protected_resource_metadata
