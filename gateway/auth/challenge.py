"""The one place a `WWW-Authenticate: Bearer` challenge is written (RFC 6750 section 3).

Every parameter value is a quoted-string (RFC 9110 section 5.6.4) with `\\` and `"` escaped;
values that could break out of the header (control characters, non-ASCII) are refused.
"""

from __future__ import annotations

from collections.abc import Mapping


def quote(value: str) -> str:
    """A quoted-string for a header parameter value."""
    if any(ord(ch) < 0x20 or ord(ch) > 0x7E for ch in value):
        raise ValueError("header parameter values must be printable ASCII")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def bearer_challenge(params: Mapping[str, str]) -> str:
    """`Bearer k1="v1", k2="v2"` in the given order (RFC 6750 section 3)."""
    if not params:
        return "Bearer"
    return "Bearer " + ", ".join(f"{name}={quote(value)}" for name, value in params.items())
