"""Authorization server metadata discovery (RFC 8414 section 3, OpenID Connect Discovery 1.0).

The document's `issuer` must equal the configured issuer exactly (RFC 8414 section 3.3),
otherwise an attacker-controlled document could name a different key set.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from gateway.auth.fetch import FetchError, fetch_json


def metadata_urls(issuer: str) -> list[str]:
    """Where to look, in order: RFC 8414 (well-known inserted before the issuer's path), then
    OpenID Connect (appended to the issuer)."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    rfc8414 = urlunsplit(
        (parts.scheme, parts.netloc, "/.well-known/oauth-authorization-server" + path, "", "")
    )
    oidc = issuer.rstrip("/") + "/.well-known/openid-configuration"
    return [rfc8414] if rfc8414 == oidc else [rfc8414, oidc]


async def discover(session: aiohttp.ClientSession, issuer: str, *, within: float) -> dict[str, Any]:
    """The issuer's metadata document; raises FetchError if none is found or it names another
    issuer."""
    failures = []
    for url in metadata_urls(issuer):
        try:
            document = await fetch_json(session, "GET", url, within=within)
        except FetchError as exc:
            failures.append(str(exc))
            continue
        if document.get("issuer") != issuer:
            raise FetchError("metadata names a different issuer")
        return document
    raise FetchError("no metadata: " + "; ".join(failures))
