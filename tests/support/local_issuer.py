"""A small authorization server on a real loopback socket: RFC 8414 metadata, a JWKS and an
RFC 7662 introspection endpoint, with keys made at run time and tokens signed by joserfc.

For the token-validation tests that need precise control (forged headers, odd claims, a key
source that goes down and comes back). The end-to-end flow uses a real OpenID provider.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from typing import Any

import aiohttp
from aiohttp import web
from joserfc.jwk import KeySet, RSAKey
from joserfc.jws import JWSRegistry

from tests.support.processes import free_port
from tests.support.secrets import remember

INTROSPECTION_CLIENT = "gateway"


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class LocalIssuer:
    """Start with `await issuer.start()`; `stop()` and `start()` again keep port and keys."""

    def __init__(self) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig"})
        self.introspection_secret = remember(secrets.token_urlsafe(24))
        self.active_tokens: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []
        self.jwks_padding = 0
        """Bytes of an extra top-level member in the JWKS document (to make it large)."""
        self._runner: web.AppRunner | None = None

    @property
    def jwks_uri(self) -> str:
        return self.issuer + "/jwks"

    def auth_server(self, name: str = "local", **extra: Any) -> dict[str, Any]:
        """This issuer as an entry of the gateway's `auth.resource_server.authorization_servers`."""
        return {"name": name, "issuer": self.issuer, **extra}

    def introspection_config(self) -> dict[str, Any]:
        return {
            "endpoint": self.issuer + "/introspect",
            "client_id": INTROSPECTION_CLIENT,
            "client_secret": self.introspection_secret,
        }

    # -- tokens ------------------------------------------------------------------------------

    def claims(self, resource: str, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "alice",
            "aud": resource,
            "client_id": "client-1",
            "scope": "mcp:tools files:read",
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(
        self,
        claims: dict[str, Any],
        *,
        header: dict[str, Any] | None = None,
        key: RSAKey | None = None,
        hmac_secret: bytes | None = None,
    ) -> str:
        """A compact JWS over `claims`, signed RS256 with this issuer's key unless told otherwise.

        Signed by hand (not through a JOSE library's checks) so tests can forge what an attacker
        would: `crit`, `jku`, `alg: none`, HS256 keyed with the public key.
        """
        signing_key = key or self.key
        protected = {"alg": "RS256", "typ": "at+jwt", "kid": signing_key.kid, **(header or {})}
        signing_input = (
            _b64(json.dumps(protected).encode()) + b"." + _b64(json.dumps(claims).encode())
        )
        if protected["alg"] == "none":
            signature = b""
        elif hmac_secret is not None:
            signature = hmac.new(hmac_secret, signing_input, hashlib.sha256).digest()
        else:
            signature = JWSRegistry.algorithms[protected["alg"]].sign(signing_input, signing_key)
        return remember((signing_input + b"." + _b64(signature)).decode())

    def opaque(self, resource: str, *, active: bool = True, **claims: Any) -> str:
        token = remember(secrets.token_urlsafe(32))
        if active:
            self.active_tokens[token] = {"active": True, **self.claims(resource, **claims)}
        return token

    # -- server ------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/oauth-authorization-server", self._metadata)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_post("/introspect", self._introspect)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metadata(self, request: web.Request) -> web.Response:
        self.requests.append("metadata")
        return web.json_response(
            {
                "issuer": self.issuer,
                "jwks_uri": self.jwks_uri,
                "introspection_endpoint": self.issuer + "/introspect",
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        self.requests.append("jwks")
        document: dict[str, Any] = dict(KeySet([self.key]).as_dict(private=False))
        if self.jwks_padding:
            document["x-padding"] = "x" * self.jwks_padding
        return web.json_response(document)

    async def _introspect(self, request: web.Request) -> web.Response:
        self.requests.append("introspect")
        expected = aiohttp.encode_basic_auth(INTROSPECTION_CLIENT, self.introspection_secret)
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return web.json_response({"error": "invalid_client"}, status=401)
        form = await request.post()
        token = form.get("token")
        answer = self.active_tokens.get(token if isinstance(token, str) else "", {"active": False})
        return web.json_response(answer)
