"""Sealed session ids: the upstream's session id and its owner, encrypted into the id itself.

A session id is `base64url(key_id || nonce || AES-256-GCM(payload, aad=route))`. Only the gateway
can read or forge one; any replica holding the key opens it with no shared store. The payload
carries 128 random bits besides the 96-bit nonce, so ids are unguessable even to a party that
could predict the nonce. Opening is strict: anything malformed, forged, sealed for another route
or under a retired key is simply `None`, and every such id gets the same 404 upstream of here.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.auth.principal import Principal

KEY_BYTES = 32
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12
_RANDOM_BYTES = 16
MAX_SESSION_ID_CHARS = 2048
"""Longer `Mcp-Session-Id` values are refused unread (a sealed id is a few hundred chars)."""
MAX_UPSTREAM_ID_CHARS = 512
_BASE64URL = re.compile(rb"^[A-Za-z0-9_-]+$")
_VISIBLE_ASCII = re.compile(r"^[\x21-\x7e]+$")
_AAD_PREFIX = b"mcp-auth-gateway session v1\x00"


def new_key() -> str:
    """A fresh sealing key as configured: 32 random bytes, unpadded base64url."""
    return _b64encode(os.urandom(KEY_BYTES))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def is_upstream_session_id(value: str) -> bool:
    """What MCP allows a session id to be (visible ASCII), within a sane length."""
    return len(value) <= MAX_UPSTREAM_ID_CHARS and _VISIBLE_ASCII.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Owner:
    """Who a session belongs to: the (issuer, subject, client_id) that opened it.

    A token without `sub` adds its own fingerprint, so such a session is bound to that one token
    rather than to every token of the client: a missing claim never widens the binding. Routes
    without authentication have the anonymous owner (every field None).
    """

    issuer: str | None
    subject: str | None
    client_id: str | None
    token_fingerprint: str | None = None

    @classmethod
    def of(cls, principal: Principal | None, token: str | None) -> Owner:
        if principal is None:
            return ANONYMOUS
        fingerprint = None
        if principal.subject is None and token is not None:
            fingerprint = hashlib.sha256(token.encode()).hexdigest()[:32]
        return cls(principal.issuer, principal.subject, principal.client_id, fingerprint)


ANONYMOUS = Owner(None, None, None)


@dataclass(frozen=True, slots=True)
class SessionClaims:
    """What an opened session id says."""

    upstream_id: str
    owner: Owner
    created: int
    """Seconds since the epoch when the gateway minted it."""


class SessionSealer:
    """Seals with the first key; opens with any (newest first), which is how keys rotate."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys or any(len(key) != KEY_BYTES for key in keys):
            raise ValueError("session keys must be 32 bytes each, at least one")
        self._keys = {hashlib.sha256(key).digest()[:_KEY_ID_BYTES]: AESGCM(key) for key in keys}
        if len(self._keys) != len(keys):
            raise ValueError("session keys must be distinct")
        self._sealing_id = hashlib.sha256(keys[0]).digest()[:_KEY_ID_BYTES]

    def seal(self, route: str, claims: SessionClaims) -> str:
        owner = claims.owner
        payload = orjson.dumps(
            [
                claims.created,
                claims.upstream_id,
                owner.issuer,
                owner.subject,
                owner.client_id,
                owner.token_fingerprint,
                _b64encode(os.urandom(_RANDOM_BYTES)),
            ]
        )
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[self._sealing_id].encrypt(nonce, payload, _aad(route))
        return _b64encode(self._sealing_id + nonce + sealed)

    def open(self, route: str, session_id: str) -> SessionClaims | None:
        """The claims of a session id this gateway sealed for `route`, else None."""
        raw = session_id.encode("ascii", "replace")
        if len(raw) > MAX_SESSION_ID_CHARS or not _BASE64URL.fullmatch(raw) or len(raw) % 4 == 1:
            return None
        data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
        if _b64encode(data) != session_id:  # one spelling per id (no non-canonical tail bits)
            return None
        aead = self._keys.get(data[:_KEY_ID_BYTES])
        if aead is None:
            return None
        start = _KEY_ID_BYTES + _NONCE_BYTES
        try:
            payload = aead.decrypt(data[_KEY_ID_BYTES:start], data[start:], _aad(route))
        except (InvalidTag, ValueError):
            return None
        return _claims(orjson.loads(payload))


def _aad(route: str) -> bytes:
    return _AAD_PREFIX + route.encode()


def _claims(fields: object) -> SessionClaims:
    # Only this gateway can produce an authentic payload, so a wrong shape is a bug, not input.
    if not isinstance(fields, list) or len(fields) != 7:
        raise ValueError("sealed session payload has the wrong shape")
    created, upstream_id, issuer, subject, client_id, fingerprint, _ = fields
    if not isinstance(created, int) or not isinstance(upstream_id, str):
        raise ValueError("sealed session payload has the wrong shape")
    return SessionClaims(upstream_id, Owner(issuer, subject, client_id, fingerprint), created)
