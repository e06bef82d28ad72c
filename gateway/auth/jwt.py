"""JWT access tokens: strict parsing and signature checks (RFC 7515, RFC 7519, RFC 8725).

The header is read by this module, not trusted to any library default: the algorithm must be on
the allowlist (asymmetric only, so never `none` and never an HMAC algorithm keyed with a public
key), any `crit` is refused (no extension is understood), and key-carrying headers (`jku`, `x5u`,
`jwk`, `x5c`) are ignored: keys come only from the configured JWKS. Duplicate JSON members in the
header or payload are refused (RFC 8725 section 3.x: parsers must not pick one silently).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import Key

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 section 2.1
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class TokenError(ValueError):
    """The token is unacceptable; `reason` is a stable code for logs and metrics."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class UnverifiedJwt:
    """A structurally valid JWT whose signature has not been checked yet."""

    token: str
    alg: str
    kid: str | None
    typ: str | None
    claims: dict[str, Any]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise TokenError("duplicate_member")
        out[key] = value
    return out


def _json_object(segment: str) -> dict[str, Any]:
    if not _SEGMENT.fullmatch(segment):
        raise TokenError("malformed")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw, object_pairs_hook=_no_duplicates)
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, TokenError):
            raise
        raise TokenError("malformed") from None
    if not isinstance(value, dict):
        raise TokenError("malformed")
    return value


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def parse_jwt(token: str) -> UnverifiedJwt:
    """Parse header and payload; `check_header` and `verify_signature` then judge them."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed")
    header = _json_object(parts[0])
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS:
        raise TokenError("disallowed_alg")
    if "crit" in header:
        raise TokenError("unsupported_crit")
    kid, typ = header.get("kid"), header.get("typ")
    if not isinstance(kid, str | None) or not isinstance(typ, str | None):
        raise TokenError("malformed")
    claims = _json_object(parts[1])
    if not parts[2]:
        raise TokenError("malformed")
    return UnverifiedJwt(token=token, alg=alg, kid=kid, typ=typ, claims=claims)


def check_header(jwt: UnverifiedJwt, *, algorithms: frozenset[str], require_at_jwt: bool) -> None:
    """The issuer-specific header rules: its algorithm allowlist and, optionally, RFC 9068 typ."""
    if jwt.alg not in algorithms:
        raise TokenError("disallowed_alg")
    if require_at_jwt and (jwt.typ or "").lower() not in ACCESS_TOKEN_TYPES:
        raise TokenError("wrong_typ")


def key_fits(key: Key, alg: str) -> bool:
    """The JWK may be used with `alg`: right key type, `use` sig if set, `alg` equal if set."""
    if key.key_type != _KEY_TYPES.get(alg[:2]):
        return False
    use = key.get("use")
    if use is not None and use != "sig":
        return False
    key_alg = key.get("alg")
    return key_alg is None or key_alg == alg


def verify_signature(jwt: UnverifiedJwt, key: Key) -> None:
    """Check the signature with exactly this key and algorithm; raise TokenError otherwise."""
    if not key_fits(key, jwt.alg):
        raise TokenError("key_mismatch")
    try:
        jws.deserialize_compact(jwt.token, key, algorithms=[jwt.alg])
    except (JoseError, ValueError):
        raise TokenError("bad_signature") from None


def verify_with_any(jwt: UnverifiedJwt, keys: Sequence[Key]) -> None:
    """Check the signature with the candidate keys for the token's `kid`; raise TokenError
    (`unknown_kid` when there are none, else why the last candidate failed)."""
    if not keys:
        raise TokenError("unknown_kid")
    failure = TokenError("bad_signature")
    for key in keys:
        try:
            verify_signature(jwt, key)
        except TokenError as exc:
            failure = exc
            continue
        return
    raise failure
