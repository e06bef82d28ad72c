"""Taking the access token from a request: RFC 6750 section 2.1, the Authorization header only.

Tokens in a query string (section 2.3) or a form body (section 2.2) are never read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class BearerHeaderError(ValueError):
    """Several Authorization headers: a malformed request (RFC 6750 section 3.1 invalid_request)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class BearerTokenSyntaxError(ValueError):
    """A Bearer credential that cannot be a token: not a b64token, or longer than allowed."""


def bearer_token(authorization: Sequence[str], max_length: int) -> str | None:
    """The bearer token from the request's Authorization header values.

    None when there is no Bearer credential (no header, or another scheme: RFC 6750 section 3.1
    treats that as a request without authentication). Raises `BearerHeaderError` for several
    Authorization headers and `BearerTokenSyntaxError` for a credential that is not a token.
    """
    if not authorization:
        return None
    if len(authorization) > 1:
        raise BearerHeaderError("duplicate Authorization headers")
    scheme, _, credentials = authorization[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = credentials.strip()
    if not token or len(token) > max_length or not _B64TOKEN.fullmatch(token):
        raise BearerTokenSyntaxError("not a b64token within the size limit")
    return token
