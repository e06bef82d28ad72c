"""The gateway's signing keys and the RFC 9068 JWT access tokens it mints with them.

One current key signs; previous keys are still published in the JWKS so tokens they signed stay
verifiable until they expire (rotation with overlap). Each key's `kid` is its RFC 7638 JWK
thumbprint, so replicas loading the same key file agree on it without configuring one. Only
ES256 (P-256) and RS256 (RSA, at least 2048 bits) keys are accepted: both are on the
protected-resource side's allowlist (`gateway.auth.jwt`) and every common client library has them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

Algorithm = Literal["ES256", "RS256"]
ALGORITHMS: frozenset[str] = frozenset({"ES256", "RS256"})
MIN_RSA_BITS = 2048
AT_JWT_TYP = "at+jwt"  # RFC 9068 section 2.1

_PUBLIC_MEMBERS = {"EC": ("kty", "crv", "x", "y"), "RSA": ("kty", "n", "e")}
"""The only members a published key may carry (besides kid, alg, use): an allowlist, so no
private member (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`) can ever reach the JWKS."""

_RESERVED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "client_id", "scope", "iat", "exp", "nbf", "jti", "auth_time"}
)
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 section 3.3


class SigningKeyError(ValueError):
    """The key material is unusable for signing access tokens."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key, the algorithm it signs with, and its `kid` (RFC 7638 thumbprint)."""

    key: ECKey | RSAKey = field(repr=False)
    alg: Algorithm
    kid: str

    @classmethod
    def of(cls, key: ECKey | RSAKey) -> SigningKey:
        """Wrap a joserfc private key; its algorithm follows from its type and size."""
        if not key.is_private:
            raise SigningKeyError("a signing key must be a private key")
        alg: Algorithm
        if isinstance(key, ECKey):
            if key.curve_name != "P-256":
                raise SigningKeyError(f"EC keys must be on P-256 (ES256), not {key.curve_name}")
            alg = "ES256"
        else:
            _check_rsa_size(key.raw_value.key_size)
            alg = "RS256"
        declared = key.get("alg")
        if declared is not None and declared != alg:
            raise SigningKeyError(f"the key declares alg {declared!r}; it signs {alg}")
        use = key.get("use")
        if use is not None and use != "sig":
            raise SigningKeyError(f"the key declares use {use!r}, not 'sig'")
        return cls(key=key, alg=alg, kid=key.thumbprint())

    @classmethod
    def generate(cls, alg: Algorithm = "ES256") -> SigningKey:
        if alg == "ES256":
            return cls.of(ECKey.generate_key("P-256"))
        if alg == "RS256":
            return cls.of(RSAKey.generate_key(MIN_RSA_BITS))
        raise SigningKeyError(f"unsupported algorithm {alg!r}; use one of {sorted(ALGORITHMS)}")

    @classmethod
    def from_text(cls, text: str) -> SigningKey:
        """Load a private key from PEM (PKCS#8 or traditional, unencrypted) or JWK JSON text.

        A `kid` in a JWK is replaced by the thumbprint, so every replica derives the same one.
        """
        stripped = text.strip()
        if stripped.startswith("{"):
            return cls._from_jwk(stripped)
        try:
            raw = load_pem_private_key(stripped.encode(), password=None)
        except (ValueError, TypeError):
            raise SigningKeyError("not a private key in PEM or JWK form") from None
        if isinstance(raw, ec.EllipticCurvePrivateKey):
            return cls.of(ECKey.import_key(raw))
        if isinstance(raw, rsa.RSAPrivateKey):
            _check_rsa_size(raw.key_size)  # before joserfc, which only warns
            return cls.of(RSAKey.import_key(raw))
        raise SigningKeyError("only EC (P-256) and RSA keys can sign access tokens")

    @classmethod
    def _from_jwk(cls, text: str) -> SigningKey:
        try:
            data = json.loads(text)
        except ValueError:
            raise SigningKeyError("not a private key in PEM or JWK form") from None
        if not isinstance(data, dict):
            raise SigningKeyError("a JWK must be a JSON object")
        data.pop("kid", None)
        kty = data.get("kty")
        try:
            if kty == "EC":
                return cls.of(ECKey.import_key(data))
            if kty == "RSA":
                modulus = data.get("n")
                if isinstance(modulus, str):
                    raw_n = base64.urlsafe_b64decode(modulus + "=" * (-len(modulus) % 4))
                    _check_rsa_size(int.from_bytes(raw_n, "big").bit_length())
                return cls.of(RSAKey.import_key(data))
        except (JoseError, ValueError, TypeError, binascii.Error) as exc:
            if isinstance(exc, SigningKeyError):
                raise
            raise SigningKeyError("the JWK is not a valid key") from None
        raise SigningKeyError(f"only EC and RSA JWKs can sign access tokens, not {kty!r}")

    def to_pem(self) -> str:
        """The private key as PKCS#8 PEM (for a key file or a Secret)."""
        return self.key.as_pem(private=True).decode()

    def public_jwk(self) -> dict[str, str]:
        """The public key as published in the JWKS, with `kid`, `alg` and `use`."""
        members = self.key.as_dict(private=False)
        public = {name: str(members[name]) for name in _PUBLIC_MEMBERS[self.key.key_type]}
        return public | {"kid": self.kid, "alg": self.alg, "use": "sig"}


def _check_rsa_size(bits: int) -> None:
    if bits < MIN_RSA_BITS:
        raise SigningKeyError(f"RSA keys need at least {MIN_RSA_BITS} bits, not {bits}")


class MintedToken(NamedTuple):
    """An access token and what the authorization server records about it."""

    token: str
    jti: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """The current signing key and the previous ones still published; immutable, so a rotation
    builds a new set that the running gateway swaps in at once."""

    current: SigningKey
    previous: tuple[SigningKey, ...] = ()

    def __post_init__(self) -> None:
        kids = [key.kid for key in self.all()]
        if len(set(kids)) != len(kids):
            raise SigningKeyError("the same key is listed twice")

    @classmethod
    def generate(cls, alg: Algorithm = "ES256") -> SigningKeys:
        """A fresh single key (the embedded default; replicas must share a key file instead)."""
        return cls(SigningKey.generate(alg))

    @classmethod
    def from_texts(cls, current: str, previous: Iterable[str] = ()) -> SigningKeys:
        """Keys from PEM or JWK texts (e.g. files of a Kubernetes Secret)."""
        return cls(SigningKey.from_text(current), tuple(SigningKey.from_text(t) for t in previous))

    def all(self) -> tuple[SigningKey, ...]:
        return (self.current, *self.previous)

    def rotated(self, new: SigningKey, *, keep: int = 1) -> SigningKeys:
        """`new` signs from now on; the current key and at most `keep - 1` older ones stay
        published. Rotate no more often than the longest access-token lifetime plus the
        verifiers' JWKS cache time, so no live token's key is dropped."""
        if keep < 0:
            raise ValueError("keep must be >= 0")
        return SigningKeys(new, self.all()[:keep])

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWK Set for `/oauth/jwks` (RFC 7517 section 5): public members only."""
        return {"keys": [key.public_jwk() for key in self.all()]}

    def mint_access_token(
        self,
        *,
        issuer: str,
        subject: str,
        client_id: str,
        audience: str,
        scopes: Iterable[str],
        lifetime: int,
        now: float,
        auth_time: float | None = None,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> MintedToken:
        """An RFC 9068 access token signed with the current key.

        Header {alg, kid, typ: at+jwt} (section 2.1); claims iss, sub, aud (the one resource
        the token is for, RFC 8707), client_id, scope (space-separated, sorted; omitted when
        no scope is granted), iat, exp, jti (128 random bits) and auth_time when known
        (section 2.2). `extra_claims` may add claims but never replace one of these.
        """
        if lifetime <= 0:
            raise ValueError("lifetime must be positive")
        granted = sorted(set(scopes))
        for scope in granted:
            if not _SCOPE_TOKEN.fullmatch(scope):
                raise ValueError(f"{scope!r} is not a scope token")
        overlap = _RESERVED_CLAIMS.intersection(extra_claims or {})
        if overlap:
            raise ValueError(f"extra claims may not replace {sorted(overlap)}")
        issued_at = int(now)
        expires_at = issued_at + lifetime
        jti = secrets.token_urlsafe(16)
        claims: dict[str, Any] = {
            **(extra_claims or {}),
            "iss": issuer,
            "sub": subject,
            "aud": audience,
            "client_id": client_id,
            "iat": issued_at,
            "exp": expires_at,
            "jti": jti,
        }
        if granted:
            claims["scope"] = " ".join(granted)
        if auth_time is not None:
            claims["auth_time"] = int(auth_time)
        key = self.current
        header = {"alg": key.alg, "kid": key.kid, "typ": AT_JWT_TYP}
        token = jwt.encode(header, claims, key.key, algorithms=[key.alg])
        return MintedToken(token, jti, expires_at)
