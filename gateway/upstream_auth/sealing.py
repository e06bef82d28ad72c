"""Sealing stored grants: AES-256-GCM with keys from the config, several at once for rotation.

A sealed record is `version (1 byte) | key id (8 bytes) | nonce (12 bytes) | ciphertext+tag`.
The key id is the first 8 bytes of a SHA-256 over a fixed label and the key, so opening picks
the key that sealed the record without trying each one, and a record sealed with a key no
longer configured is told apart (`UnknownSealKeyError`) from one that was altered (`SealError`).
The nonce is random (96 bits, NIST SP 800-38D section 8.2.2): fine for the number of writes a
store of user grants sees under one key. `associated` data binds a record to where it is
stored (the route and the user), so a record copied under another user's key does not open.

The first configured key seals; every key opens (rotation: put the new key first, keep the old
one until every record has been written again, then drop it). No error here carries a key, a
plaintext or a ciphertext.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Final, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.config.upstream_auth import decode_sealing_key

__all__ = ["GrantSealer", "SealError", "UnknownSealKeyError"]

VERSION: Final = b"\x01"
KEY_ID_BYTES: Final = 8
NONCE_BYTES: Final = 12
KEY_BYTES: Final = 32
_HEADER: Final = len(VERSION) + KEY_ID_BYTES + NONCE_BYTES
_TAG_BYTES: Final = 16
_KEY_ID_LABEL: Final = b"mcp-gateway grant sealing key id\x00"


class SealError(Exception):
    """A record that cannot be opened: altered, truncated, or not a sealed record at all.
    Its message is fixed; it never carries a key, a plaintext or a ciphertext."""


class UnknownSealKeyError(SealError):
    """A well-formed record sealed with a key that is not (or no longer) configured."""


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(_KEY_ID_LABEL + key).digest()[:KEY_ID_BYTES]


class GrantSealer:
    """Seals with the first key, opens with whichever key sealed the record."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._ciphers: dict[bytes, AESGCM] = {}
        for position, key in enumerate(keys):
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {position} is not {KEY_BYTES} bytes")
            self._ciphers.setdefault(_key_id(key), AESGCM(key))
        self._current = _key_id(keys[0])

    @classmethod
    def from_keys(cls, keys: Sequence[str]) -> Self:
        """From base64url keys (config `encryption_keys`): the first seals, all open.
        ValueError naming the position of a key that does not decode, never the key."""
        decoded = []
        for position, text in enumerate(keys):
            try:
                decoded.append(decode_sealing_key(text))
            except ValueError as exc:
                raise ValueError(f"encryption key {position}: {exc}") from None
        return cls(decoded)

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._current].encrypt(nonce, plaintext, associated)
        return VERSION + self._current + nonce + sealed

    def open(self, sealed: bytes, associated: bytes) -> bytes:
        """The plaintext; `UnknownSealKeyError` for a record sealed with a key not configured,
        `SealError` for anything altered or malformed."""
        if len(sealed) < _HEADER + _TAG_BYTES or sealed[:1] != VERSION:
            raise SealError("not a sealed record")
        cipher = self._ciphers.get(self.key_id_of(sealed))
        if cipher is None:
            raise UnknownSealKeyError("sealed with a key that is not configured")
        nonce = sealed[len(VERSION) + KEY_ID_BYTES : _HEADER]
        try:
            return cipher.decrypt(nonce, sealed[_HEADER:], associated)
        except InvalidTag:
            raise SealError("the record does not open: altered, or sealed for elsewhere") from None

    def is_current(self, sealed: bytes) -> bool:
        """Whether `sealed` was sealed with the first (current) key: False means a write would
        re-seal it with the new key (rotation)."""
        return self.key_id_of(sealed) == self._current

    @staticmethod
    def key_id_of(sealed: bytes) -> bytes:
        return sealed[len(VERSION) : len(VERSION) + KEY_ID_BYTES]
