"""PKCE (RFC 7636) as the authorization server sees it, `S256` only.

OAuth 2.1 section 4.1.1 and the MCP authorization spec require PKCE with `S256`; `plain` is refused,
and so is a request that omits `code_challenge_method`, since RFC 7636 section 4.3 defaults it to
`plain`. Checked at `/authorize` (`check_challenge`) and again at `/token` (`verify`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import ClassVar, Literal

METHOD = "S256"

# RFC 7636 section 4.1: code-verifier = 43*128unreserved.
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
# BASE64URL (no padding) of a 32-byte SHA-256 digest: 43 characters, the last one carrying only 4
# bits, so its 2 low bits are zero. Any other string could never equal a computed challenge.
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")

PkceReason = Literal["challenge_missing", "method_missing", "method_not_supported", "malformed"]


class PkceError(ValueError):
    """An `/authorize` request without a usable S256 code challenge.

    `reason` is a stable code for logs and metrics; `error` is the OAuth error code to send back
    (OAuth 2.1 section 4.1.2.1: `invalid_request`, also for an unsupported method).
    """

    error: ClassVar[str] = "invalid_request"

    def __init__(self, reason: PkceReason) -> None:
        super().__init__(reason)
        self.reason: PkceReason = reason


def check_challenge(method: str | None, challenge: str | None) -> str:
    """The request's `code_challenge`, once it is a well-formed S256 challenge (RFC 7636 4.2-4.4).

    An empty parameter counts as a missing one. The method is compared exactly: `s256` is not
    `S256` (RFC 7636 section 4.2 defines the name as written).
    """
    if not challenge:
        raise PkceError("challenge_missing")
    if not method:
        raise PkceError("method_missing")
    if method != METHOD:
        raise PkceError("method_not_supported")
    if not _CHALLENGE.fullmatch(challenge):
        raise PkceError("malformed")
    return challenge


def challenge_of(verifier: str) -> str:
    """BASE64URL-ENCODE(SHA256(ASCII(code_verifier))), RFC 7636 section 4.2."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify(verifier: str, challenge: str) -> bool:
    """Whether the token request's `code_verifier` matches the stored challenge (RFC 7636 4.6).

    A verifier outside the section 4.1 syntax never matches, even if its hash would. The digests
    are compared in constant time.
    """
    if not isinstance(verifier, str) or not isinstance(challenge, str):
        return False
    if not _VERIFIER.fullmatch(verifier):
        return False
    return hmac.compare_digest(challenge_of(verifier).encode("ascii"), challenge.encode("utf-8"))
