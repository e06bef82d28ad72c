"""Redirect URIs: which ones a client may register, how a request's one is matched, and how the
authorization response is added to it.

Registration (RFC 7591 section 2, pre-registered clients alike) accepts only `https` URIs, or `http`
on a loopback host (MCP 2026-07-28 Security Considerations, "Communication Security"; RFC 8252
section 7.3). Private-use schemes for native apps (`com.example.app:/cb`, RFC 8252 section 7.1)
are refused: any scheme can be claimed by any app on the device, and the MCP spec allows only
https or localhost. Everything is checked on the URI as written, with no normalisation, because
the authorization request's `redirect_uri` is then matched against it byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal
from urllib.parse import parse_qsl, urlencode

MAX_URI_LENGTH = 2048
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "[::1]", "localhost"})
RESPONSE_PARAMETERS = frozenset({"code", "state", "iss", "error", "error_description", "error_uri"})
"""What an authorization response adds to a redirect URI (RFC 6749 4.1.2 and 4.1.2.1, RFC 9207)."""

# The characters RFC 3986 allows in a URI (unreserved, reserved, "%"): no spaces, controls,
# non-ASCII, backslashes (which browsers read as "/") or quotes.
_URI_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_AUTHORITY_PATH_QUERY = re.compile(r"//([^/?]*)[^?]*(?:\?(.*))?")
_HOST_PORT = re.compile(r"(\[[^\]]*\]|[^:]*)(?::(.*))?")  # (IPv6 literal | other) [":" port]
_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")
_PORT = re.compile(r"[0-9]{1,5}")

RedirectReason = Literal[
    "not_a_string",
    "too_long",
    "invalid_characters",
    "wildcard",
    "invalid_percent_encoding",
    "not_absolute",
    "scheme_not_allowed",
    "fragment",
    "userinfo",
    "invalid_host",
    "invalid_port",
    "http_not_loopback",
    "reserved_query_parameter",
]


class RedirectUriError(ValueError):
    """A URI the gateway will not register or redirect to; `reason` is a stable code."""

    def __init__(self, reason: RedirectReason) -> None:
        super().__init__(reason)
        self.reason: RedirectReason = reason


def _checked_parts(uri: str) -> tuple[str, str, str]:
    """(scheme, host, query) of an absolute http(s) URI with an authority and nothing dubious.

    Refuses, in this order: oversize, characters outside RFC 3986, `*` (no wildcards), broken
    percent-encoding, a missing or other scheme (`javascript:`, `data:`, `file:`, private-use),
    a fragment (RFC 6749 section 3.1.2), no `//` authority, userinfo, a malformed host or port.
    The scheme must be lowercase as written: exact matching compares strings.
    """
    if not isinstance(uri, str):
        raise RedirectUriError("not_a_string")
    if len(uri) > MAX_URI_LENGTH:
        raise RedirectUriError("too_long")
    if not _URI_CHARACTERS.fullmatch(uri):
        raise RedirectUriError("invalid_characters")
    if "*" in uri:
        raise RedirectUriError("wildcard")
    if _BAD_PERCENT.search(uri):
        raise RedirectUriError("invalid_percent_encoding")
    scheme_match = _SCHEME.match(uri)
    if scheme_match is None:
        raise RedirectUriError("not_absolute")
    scheme = scheme_match[1]
    if scheme not in ("https", "http"):
        raise RedirectUriError("scheme_not_allowed")
    if "#" in uri:
        raise RedirectUriError("fragment")
    parts = _AUTHORITY_PATH_QUERY.fullmatch(uri, scheme_match.end())
    if parts is None:
        raise RedirectUriError("not_absolute")
    authority, query = parts[1], parts[2] or ""
    if "@" in authority:
        raise RedirectUriError("userinfo")
    host_port = _HOST_PORT.fullmatch(authority)
    if host_port is None or not _HOST.fullmatch(host_port[1]):
        raise RedirectUriError("invalid_host")
    host, port = host_port[1], host_port[2]
    if port is not None and not (_PORT.fullmatch(port) and 1 <= int(port) <= 65535):
        raise RedirectUriError("invalid_port")
    return scheme, host, query


def _query_names(query: str) -> set[str]:
    return {name for name, _ in parse_qsl(query, keep_blank_values=True)}


def check_registered_redirect(uri: str) -> str:
    """`uri`, if a client may register it as a redirect URI; else `RedirectUriError`.

    Beyond the syntax of `_checked_parts`: `http` only on a loopback host written exactly as
    127.0.0.1, [::1] or localhost (so `http://localhost.evil.com` and `http://10.0.0.1` are
    refused), and no query parameter the authorization response would add (`code`, `state`,
    `iss`, `error`...), since RFC 6749 section 3.1.2 keeps the registered query and a
    duplicated `code` or `iss` would be ambiguous to the client.
    """
    scheme, host, query = _checked_parts(uri)
    if scheme == "http" and host not in LOOPBACK_HOSTS:
        raise RedirectUriError("http_not_loopback")
    if _query_names(query) & RESPONSE_PARAMETERS:
        raise RedirectUriError("reserved_query_parameter")
    return uri


def check_https_uri(uri: str) -> str:
    """`uri`, if it is an https URI fit to show on the consent page (`client_uri`, `logo_uri`).

    The same syntax rules as redirect URIs (no userinfo, so `https://trusted@evil` cannot
    mislead a reader), and `https` only, loopback included.
    """
    scheme, _, _ = _checked_parts(uri)
    if scheme != "https":
        raise RedirectUriError("scheme_not_allowed")
    return uri


def redirect_matches(requested: str, registered: Sequence[str]) -> bool:
    """Whether an authorization request's `redirect_uri` is one of the client's, exactly.

    Simple string comparison (OAuth 2.1 section 4.1.1, RFC 9700 section 4.1.3): no case folding,
    no trailing-slash or percent-encoding equivalence, and no RFC 8252 section 7.3 port variance
    for loopback URIs. MCP clients register (or list in their metadata document) the port they
    listen on, and the issue fixes redirect URIs as checked exactly: ignoring the port would let
    another local process, listening on any port, receive codes meant for the client.
    """
    return isinstance(requested, str) and any(requested == uri for uri in registered)


def add_query(uri: str, params: Mapping[str, str]) -> str:
    """`uri` with the authorization response `params` appended to its query.

    The registered query is kept as written (RFC 6749 section 3.1.2) and the parameters are
    `application/x-www-form-urlencoded` (RFC 6749 Appendix B). A parameter the URI's query
    already has, or a URI with a fragment, is refused with `RedirectUriError`: registration
    refuses such URIs, so reaching here with one is a bug, not something to paper over.
    """
    if "#" in uri:
        raise RedirectUriError("fragment")
    base, _, query = uri.partition("?")
    if _query_names(query) & set(params):
        raise RedirectUriError("reserved_query_parameter")
    added = urlencode(params)
    if not added:
        return uri
    return f"{base}?{query}&{added}" if query else f"{base}?{added}"
