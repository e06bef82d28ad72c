"""Reading what the facade's endpoints are sent: form and JSON bodies (bounded), Basic client
credentials, and whether a form POST came from the gateway's own pages.

The sign-in and consent forms are accepted only from the gateway's own pages: their POST must
carry `Origin` equal to the origin of `server.public_url` (browsers send it on form posts), so
another site, even one in `server.allowed_origins`, cannot submit them (login CSRF, forged
consent). Unexpected input is an `OAuthError` (a 4xx), never a 500.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web
from multidict import MultiDict

from gateway.auth.fetch import read_bounded
from gateway.oauth.clients import basic_credentials
from gateway.oauth.error import OAuthError

MAX_FORM_BYTES = 16 * 1024
MAX_FORM_FIELDS = 64
MAX_REGISTRATION_BYTES = 32 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str:
    """The serialized origin of an http(s) URL (RFC 6454 section 6.2): scheme://host[:port],
    lowercase, the default port left out; as browsers send it in `Origin`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = parts.port
    suffix = "" if port is None or port == _DEFAULT_PORTS.get(parts.scheme) else f":{port}"
    return f"{parts.scheme}://{host}{suffix}"


def foreign_form_post(origins: list[str], own_origin: str) -> str | None:
    """Why a form POST with these `Origin` values did not come from the gateway's own pages
    (`missing`, `repeated`, `null`, `other`), or None when it did."""
    if not origins:
        return "missing"
    if len(origins) > 1:
        return "repeated"
    if origins[0] == "null":
        return "null"
    if origins[0].lower() != own_origin:
        return "other"
    return None


def basic(request: web.Request) -> tuple[str, str] | None:
    """The client's `client_secret_basic` credentials, if it sent them (one header only)."""
    values = request.headers.getall("Authorization", ())
    if len(values) > 1:
        raise OAuthError("invalid_request", "One Authorization header")
    return basic_credentials(values[0] if values else None)


async def form(request: web.Request) -> MultiDict[str]:
    """An application/x-www-form-urlencoded body (UTF-8, at most 16 KiB and 64 fields); any
    other body is an `invalid_request` (HTML forms and OAuth clients send nothing else)."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "Send an application/x-www-form-urlencoded body")
    if (request.charset or "utf-8").lower() != "utf-8":
        raise OAuthError("invalid_request", "Send the form in UTF-8")
    body = await _bounded_body(request, MAX_FORM_BYTES, "invalid_request")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError:  # not UTF-8 (UnicodeDecodeError), or too many fields
        raise OAuthError("invalid_request", "The form is not valid UTF-8 form data") from None
    return MultiDict(pairs)


async def json_body(request: web.Request) -> Any:
    """A registration request's JSON body (RFC 7591 section 3.1), at most 32 KiB."""
    if request.content_type != "application/json":
        raise OAuthError("invalid_client_metadata", "Send the client metadata as JSON")
    body = await _bounded_body(request, MAX_REGISTRATION_BYTES, "invalid_client_metadata")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # not UTF-8 or not JSON, or nested too deep
        raise OAuthError("invalid_client_metadata", "Client metadata is not JSON") from None


async def _bounded_body(request: web.Request, limit: int, error: str) -> bytes:
    """The whole request body, or 413 as soon as it exceeds `limit` bytes."""
    body = await read_bounded(request.content, limit, declared=request.content_length)
    if body is None:
        raise OAuthError(error, "Request body too large", 413)
    return body
