"""The gateway's signing keys and the access tokens it mints: published safely, rotated with
overlap, and accepted by the gateway's own protected-resource validation (and forgeries not)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from gateway.auth.authenticator import HttpSessionHolder, RouteAuthenticator, TrustedServer
from gateway.auth.principal import Principal
from gateway.auth.token_cache import TokenCache
from gateway.config.auth import AuthorizationServer, ResourceServer
from gateway.errors import InvalidTokenError
from gateway.oauth.signing import SigningKey, SigningKeyError, SigningKeys
from tests.support.processes import free_port
from tests.support.secrets import remember

ISSUER_PATH = "/oauth"
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
SCOPES = ["mcp:tools", "files:read"]
T0 = 1_800_000_000.0

ES256_KEY, RS256_KEY = SigningKey.generate("ES256"), SigningKey.generate("RS256")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


# -- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [ES256_KEY, RS256_KEY], ids=["ES256", "RS256"])
def test_a_key_is_named_by_its_thumbprint(key: SigningKey) -> None:
    assert key.kid == key.key.thumbprint()
    public = (ECKey if key.alg == "ES256" else RSAKey).import_key(key.public_jwk())
    assert public.thumbprint() == key.kid  # RFC 7638: the same from the public part alone


def test_a_kid_given_with_the_key_is_replaced_by_the_thumbprint() -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "operator-chosen"})
    assert SigningKey.of(key).kid == key.thumbprint() != "operator-chosen"


def test_generated_keys_default_to_es256_and_differ() -> None:
    first, second = SigningKeys.generate(), SigningKeys.generate()
    assert first.current.alg == "ES256"
    assert first.current.kid != second.current.kid


@pytest.mark.parametrize("key", [ES256_KEY, RS256_KEY], ids=["ES256", "RS256"])
def test_the_jwks_has_public_members_only(key: SigningKey) -> None:
    older = SigningKey.generate("RS256" if key.alg == "ES256" else "ES256")
    document = SigningKeys(key, (older,)).jwks()
    assert [k["kid"] for k in document["keys"]] == [key.kid, older.kid]
    for published in document["keys"]:
        assert published["use"] == "sig"
        assert published["alg"] in {"ES256", "RS256"}
        for member in PRIVATE_MEMBERS:
            assert member not in published
    assert set(document["keys"][0]) == (
        {"kty", "crv", "x", "y", "kid", "alg", "use"}
        if key.alg == "ES256"
        else {"kty", "n", "e", "kid", "alg", "use"}
    )
    assert key.key.as_dict(private=True)["d"] not in json.dumps(document)


@pytest.mark.parametrize("key", [ES256_KEY, RS256_KEY], ids=["ES256", "RS256"])
def test_keys_load_from_pem_and_jwk_text_with_the_same_kid(key: SigningKey) -> None:
    from_pem = SigningKey.from_text(key.to_pem())
    assert (from_pem.kid, from_pem.alg) == (key.kid, key.alg)
    jwk = key.key.as_dict(private=True) | {"kid": "operator-chosen"}
    from_jwk = SigningKey.from_text(json.dumps(jwk))
    assert (from_jwk.kid, from_jwk.alg) == (key.kid, key.alg)


def traditional_pem(private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def test_traditional_openssl_pem_and_hand_made_jwks_load() -> None:
    key = SigningKey.from_text(traditional_pem(ec.generate_private_key(ec.SECP256R1())))
    assert key.alg == "ES256"
    assert SigningKey.from_text(rsa_jwk(2048)).alg == "RS256"


def rsa_jwk(bits: int) -> str:
    """A private RSA JWK built by hand (joserfc would not make one this small)."""
    numbers = rsa.generate_private_key(65537, bits).private_numbers()

    def member(value: int) -> str:
        return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    public = numbers.public_numbers
    return json.dumps(
        {"kty": "RSA", "n": member(public.n), "e": member(public.e), "d": member(numbers.d)}
        | {"p": member(numbers.p), "q": member(numbers.q), "dp": member(numbers.dmp1)}
        | {"dq": member(numbers.dmq1), "qi": member(numbers.iqmp)}
    )


UNUSABLE_KEYS: dict[str, Callable[[], str]] = {
    "public-pem": lambda: ES256_KEY.key.as_pem(private=False).decode(),
    "public-jwk": lambda: json.dumps(ES256_KEY.public_jwk()),
    "p384": lambda: traditional_pem(ec.generate_private_key(ec.SECP384R1())),
    "rsa-1024-pem": lambda: traditional_pem(rsa.generate_private_key(65537, 1024)),
    "rsa-1024-jwk": lambda: rsa_jwk(1024),
    "okp": lambda: json.dumps(OKPKey.generate_key("Ed25519").as_dict(private=True)),
    "oct": lambda: json.dumps({"kty": "oct", "k": b64(b"0" * 32)}),
    "alg-mismatch": lambda: json.dumps(ES256_KEY.key.as_dict(private=True) | {"alg": "ES384"}),
    "use-enc": lambda: json.dumps(ES256_KEY.key.as_dict(private=True) | {"use": "enc"}),
    "broken-jwk": lambda: json.dumps({"kty": "EC", "crv": "P-256", "x": "AA", "d": "AA"}),
    "json-array": lambda: "[1, 2]",
    "garbage": lambda: "not a key",
}


@pytest.mark.parametrize("text", UNUSABLE_KEYS.values(), ids=list(UNUSABLE_KEYS))
def test_unusable_key_material_is_refused(text: Callable[[], str]) -> None:
    with pytest.raises(SigningKeyError):
        SigningKey.from_text(text())


def test_rotation_keeps_the_previous_key_published() -> None:
    keys = SigningKeys(ES256_KEY)
    new = SigningKey.generate()
    rotated = keys.rotated(new)
    assert rotated.current == new
    assert rotated.previous == (ES256_KEY,)
    assert keys.current == ES256_KEY  # the old set is unchanged (swapped in whole)
    newest = SigningKey.generate()
    assert rotated.rotated(newest).previous == (new,)
    assert rotated.rotated(newest, keep=2).previous == (new, ES256_KEY)


def test_a_key_cannot_be_listed_twice() -> None:
    with pytest.raises(SigningKeyError):
        SigningKeys(ES256_KEY, (SigningKey.from_text(ES256_KEY.to_pem()),))


# -- minting ------------------------------------------------------------------------------------


def mint(keys: SigningKeys, audience: str, issuer: str = "https://gw.example", **kw: Any) -> str:
    arguments: dict[str, Any] = {
        "issuer": issuer,
        "subject": "alice",
        "client_id": "client-1",
        "audience": audience,
        "scopes": SCOPES,
        "lifetime": 300,
        "now": time.time(),
    } | kw
    return remember(keys.mint_access_token(**arguments).token)


def test_a_minted_token_has_the_rfc_9068_header_and_claims() -> None:
    keys = SigningKeys(ES256_KEY)
    minted = keys.mint_access_token(
        issuer="https://gw.example",
        subject="alice",
        client_id="client-1",
        audience="https://gw.example/files/mcp",
        scopes=["mcp:tools", "files:read", "files:read"],
        lifetime=300,
        now=T0 + 0.7,
        auth_time=T0 - 60.2,
        extra_claims={"email": "alice@example.com"},
    )
    header, claims, _ = minted.token.split(".")
    assert unb64(header) == {"alg": "ES256", "kid": ES256_KEY.kid, "typ": "at+jwt"}
    assert unb64(claims) == {
        "iss": "https://gw.example",
        "sub": "alice",
        "aud": "https://gw.example/files/mcp",
        "client_id": "client-1",
        "scope": "files:read mcp:tools",
        "iat": int(T0),
        "exp": int(T0) + 300,
        "jti": minted.jti,
        "auth_time": int(T0 - 60.2),
        "email": "alice@example.com",
    }
    assert minted.expires_at == int(T0) + 300
    assert len(minted.jti) >= 22  # 128 bits, base64url


def test_each_token_gets_a_fresh_jti_and_no_scope_claim_when_none_is_granted() -> None:
    keys = SigningKeys(ES256_KEY)
    arguments: dict[str, Any] = {
        "issuer": "https://gw.example",
        "subject": "alice",
        "client_id": "client-1",
        "audience": "https://gw.example/files/mcp",
        "scopes": [],
        "lifetime": 60,
        "now": T0,
    }
    first, second = (keys.mint_access_token(**arguments) for _ in range(2))
    assert first.jti != second.jti
    assert "scope" not in unb64(first.token.split(".")[1])


@pytest.mark.parametrize(
    "change",
    [
        {"extra_claims": {"sub": "admin"}},
        {"extra_claims": {"scope": "files:admin"}},
        {"extra_claims": {"aud": "https://elsewhere.example"}},
        {"scopes": ["files:read files:write"]},
        {"scopes": ['quote"d']},
        {"lifetime": 0},
    ],
    ids=["extra-sub", "extra-scope", "extra-aud", "space-in-scope", "quote-in-scope", "no-life"],
)
def test_minting_refuses_claims_that_would_mislead(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"extra claims|scope token|lifetime"):
        mint(SigningKeys(ES256_KEY), "https://gw.example/files/mcp", **change)


# -- the gateway's own validation, over a real JWKS endpoint ------------------------------------


class JwksEndpoint:
    """The gateway's JWKS on a loopback socket; `keys` may be swapped (rotation)."""

    def __init__(self, keys: SigningKeys) -> None:
        self.keys = keys
        self.issuer = f"http://127.0.0.1:{free_port()}{ISSUER_PATH}"

    async def serve(self, request: web.Request) -> web.Response:
        return web.json_response(self.keys.jwks())


@asynccontextmanager
async def jwks_endpoint(keys: SigningKeys) -> AsyncIterator[JwksEndpoint]:
    endpoint = JwksEndpoint(keys)
    app = web.Application()
    app.router.add_get(ISSUER_PATH + "/jwks", endpoint.serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = int(endpoint.issuer.split(":")[2].split("/")[0])
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield endpoint
    finally:
        await runner.cleanup()


class Validator:
    """The gateway's protected-resource validation for one route, trusting the endpoint."""

    def __init__(self, endpoint: JwksEndpoint, http: HttpSessionHolder) -> None:
        self.resource = "http://127.0.0.1:9/files/mcp"
        config = AuthorizationServer(
            name="gateway",
            issuer=endpoint.issuer,
            jwks_uri=endpoint.issuer + "/jwks",
            algorithms=["ES256", "RS256"],
            require_at_jwt=True,
        )
        settings = ResourceServer(authorization_servers=[config])
        self.outcomes: list[str] = []
        self.authenticator = RouteAuthenticator(
            resource=self.resource,
            metadata_url="http://127.0.0.1:9/.well-known/oauth-protected-resource/files/mcp",
            scopes=[],
            servers=[TrustedServer(config, settings, http, lambda name, outcome: None)],
            settings=settings,
            cache=TokenCache(0),
            on_outcome=self.outcomes.append,
        )

    async def principal(self, token: str) -> Principal:
        return await self.authenticator.authenticate([f"Bearer {token}"])

    async def refusal(self, token: str) -> str:
        with pytest.raises(InvalidTokenError) as refused:
            await self.principal(token)
        return refused.value.detail


@pytest.fixture
async def http() -> AsyncIterator[HttpSessionHolder]:
    holder = HttpSessionHolder()
    async with aiohttp.ClientSession() as session:
        holder.session = session
        yield holder


@pytest.mark.parametrize("key", [ES256_KEY, RS256_KEY], ids=["ES256", "RS256"])
async def test_a_minted_token_passes_the_gateways_validation(
    key: SigningKey, http: HttpSessionHolder
) -> None:
    keys = SigningKeys(key)
    async with jwks_endpoint(keys) as endpoint:
        validator = Validator(endpoint, http)
        token = mint(keys, validator.resource, endpoint.issuer)
        principal = await validator.principal(token)
        assert principal.issuer == endpoint.issuer
        assert (principal.subject, principal.client_id) == ("alice", "client-1")
        assert principal.scopes == frozenset(SCOPES)
        other = mint(keys, "http://127.0.0.1:9/other/mcp", endpoint.issuer)
        assert await validator.refusal(other) == "wrong_audience"
        expired = mint(keys, validator.resource, endpoint.issuer, now=time.time() - 3600)
        assert await validator.refusal(expired) == "expired"
    assert validator.outcomes == ["valid", "invalid", "invalid"]


async def test_tokens_of_the_previous_key_verify_until_it_is_retired(
    http: HttpSessionHolder,
) -> None:
    keys = SigningKeys(ES256_KEY)
    async with jwks_endpoint(keys) as endpoint:
        before = Validator(endpoint, http)
        old = mint(keys, before.resource, endpoint.issuer)
        assert (await before.principal(old)).subject == "alice"

        endpoint.keys = keys = keys.rotated(RS256_KEY)
        new = mint(keys, before.resource, endpoint.issuer)
        assert unb64(new.split(".")[0])["kid"] == RS256_KEY.kid
        during = Validator(endpoint, http)
        assert (await during.principal(new)).subject == "alice"
        assert (await during.principal(old)).subject == "alice"

        endpoint.keys = keys.rotated(SigningKey.generate(), keep=1)  # the first key retires
        after = Validator(endpoint, http)
        assert (await after.principal(new)).subject == "alice"
        assert await after.refusal(old) == "unknown_kid"


async def test_forged_tokens_are_refused(http: HttpSessionHolder) -> None:
    keys = SigningKeys(RS256_KEY)
    async with jwks_endpoint(keys) as endpoint:
        validator = Validator(endpoint, http)
        genuine = mint(keys, validator.resource, endpoint.issuer)
        header, claims, signature = genuine.split(".")
        assert (await validator.principal(genuine)).subject == "alice"

        def signed(alg: str, secret: bytes | None) -> str:
            forged = b64(json.dumps(unb64(header) | {"alg": alg}).encode())
            if secret is None:
                return remember(f"{forged}.{claims}.")
            mac = hmac.new(secret, f"{forged}.{claims}".encode(), hashlib.sha256).digest()
            return remember(f"{forged}.{claims}.{b64(mac)}")

        public_pem = RS256_KEY.key.as_pem(private=False)
        admin = b64(json.dumps(unb64(claims) | {"sub": "admin"}).encode())
        no_typ = b64(json.dumps({k: v for k, v in unb64(header).items() if k != "typ"}).encode())
        attacker = RSAKey.generate_key(2048)  # signs with our kid in the header
        impostor = remember(jwt.encode(unb64(header), unb64(claims), attacker))
        forgeries = {
            "alg-none": signed("none", None),
            "hs256-keyed-with-the-public-key": signed("HS256", public_pem),
            "payload-changed": remember(f"{header}.{admin}.{signature}"),
            "typ-removed": remember(f"{no_typ}.{claims}.{signature}"),
            "another-key-claiming-our-kid": impostor,
        }
        reasons = {case: await validator.refusal(token) for case, token in forgeries.items()}
    assert reasons == {
        "alg-none": "disallowed_alg",
        "hs256-keyed-with-the-public-key": "disallowed_alg",
        "payload-changed": "bad_signature",
        "typ-removed": "wrong_typ",
        "another-key-claiming-our-kid": "bad_signature",
    }
