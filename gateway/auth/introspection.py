"""RFC 7662 token introspection, for authorization servers that issue opaque tokens."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp

from gateway.auth.fetch import fetch_json
from gateway.config.auth import Introspection


async def introspect(
    session: aiohttp.ClientSession, settings: Introspection, token: str, *, within: float
) -> dict[str, Any]:
    """POST the token to the introspection endpoint (RFC 7662 section 2.1), authenticated as the
    gateway's client; return the response object. Raises FetchError when the answer is not had.
    """
    secret = settings.client_secret.get_secret_value()
    form = {"token": token, "token_type_hint": "access_token"}
    authorization = None
    if settings.auth_method == "client_secret_basic":
        # RFC 6749 section 2.3.1: form-urlencode the id and secret before Basic encoding.
        authorization = aiohttp.encode_basic_auth(
            quote(settings.client_id, safe=""), quote(secret, safe="")
        )
    else:
        form |= {"client_id": settings.client_id, "client_secret": secret}
    return await fetch_json(
        session, "POST", settings.endpoint, within=within, form=form, authorization=authorization
    )
