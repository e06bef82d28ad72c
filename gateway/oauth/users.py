"""Local users for small teams and the demo: a YAML file of salted scrypt password hashes.

    users:
      alice:
        password_hash: "scrypt$16384$8$1$<salt>$<hash>"   # mcp-auth-gateway hash-password
        claims: {email: alice@example.com, groups: [eng]}

A user's claims feed the grant rules exactly as an OpenID provider's would. Checking a password
costs the same whether or not the user exists (an unknown name is checked against a dummy
hash), and hashes are compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
"""RFC 7914 parameters: about 16 MiB and tens of milliseconds per check."""
MAX_PASSWORD_BYTES = 1024
_SALT_BYTES = 16
_HASH_BYTES = 32
_USERNAME = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")
_ENCODED = re.compile(
    r"^scrypt\$(?P<n>[0-9]{1,8})\$(?P<r>[0-9]{1,3})\$(?P<p>[0-9]{1,3})"
    r"\$(?P<salt>[A-Za-z0-9_-]{16,64})\$(?P<hash>[A-Za-z0-9_-]{32,128})$"
)


class UsersFileError(ValueError):
    """The users file is unreadable or malformed; the message never quotes a hash."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r, dklen=_HASH_BYTES
    )


def hash_password(password: str) -> str:
    """The stored form of a password, with a fresh random salt."""
    if not password or len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise ValueError(f"a password must be 1 to {MAX_PASSWORD_BYTES} bytes")
    salt = os.urandom(_SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _check_encoded(encoded: str) -> re.Match[str]:
    match = _ENCODED.fullmatch(encoded)
    if match is None:
        raise ValueError("not a password hash from `mcp-auth-gateway hash-password`")
    n, r, p = int(match["n"]), int(match["r"]), int(match["p"])
    if n < 2**10 or n > 2**20 or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError("password hash parameters out of range")
    return match


_DUMMY = hash_password(_b64(os.urandom(12)))


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches the stored form, in constant time over the hash."""
    match = _check_encoded(encoded)
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        return False
    digest = _scrypt(password, _unb64(match["salt"]), int(match["n"]), int(match["r"]),
                     int(match["p"]))  # fmt: skip
    return hmac.compare_digest(digest, _unb64(match["hash"]))


@dataclass(frozen=True, slots=True)
class LocalUser:
    username: str
    password_hash: str = field(repr=False)
    claims: Mapping[str, Any] = field(default_factory=dict)


class LocalUsers:
    """The users of one users file."""

    def __init__(self, users: Mapping[str, LocalUser]) -> None:
        self._users = dict(users)

    def __len__(self) -> int:
        return len(self._users)

    def authenticate(self, username: str, password: str) -> LocalUser | None:
        """The user, if the password is theirs. Unknown users cost one hash check too."""
        user = self._users.get(username)
        if user is None:
            verify_password(password, _DUMMY)
            return None
        return user if verify_password(password, user.password_hash) else None

    @classmethod
    def load(cls, path: Path) -> LocalUsers:
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise UsersFileError(
                f"cannot read users file {path}: {exc.__class__.__name__}"
            ) from None
        return cls.parse(document, str(path))

    @classmethod
    def parse(cls, document: Any, source: str = "users file") -> LocalUsers:
        if not isinstance(document, dict) or set(document) != {"users"}:
            raise UsersFileError(f"{source}: expected one top-level key, `users`")
        entries = document["users"]
        if not isinstance(entries, dict) or not entries:
            raise UsersFileError(f"{source}: `users` must map user names to entries")
        users = {}
        for name, entry in entries.items():
            where = f"{source}: users.{name}"
            if not isinstance(name, str) or not _USERNAME.fullmatch(name):
                raise UsersFileError(f"{source}: user names are 1-64 of A-Z a-z 0-9 . _ @ + -")
            if not isinstance(entry, dict) or not set(entry) <= {"password_hash", "claims"}:
                raise UsersFileError(f"{where}: expected password_hash and optional claims")
            encoded, claims = entry.get("password_hash"), entry.get("claims", {})
            if not isinstance(encoded, str):
                raise UsersFileError(f"{where}.password_hash is required")
            try:
                _check_encoded(encoded)
            except ValueError as exc:
                raise UsersFileError(f"{where}.password_hash: {exc}") from None
            if not isinstance(claims, dict) or any(not isinstance(k, str) for k in claims):
                raise UsersFileError(f"{where}.claims must be a mapping")
            users[name] = LocalUser(name, encoded, dict(claims))
        return cls(users)
