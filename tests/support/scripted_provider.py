"""An OpenID provider on a real loopback socket whose UserInfo answers a test scripts.

For what a real provider will not do on request: answer UserInfo slowly, with a 5xx, a wrong
content type, a body with a repeated key, a JWT signed by another key, a redirect. Discovery
(`/.well-known/openid-configuration`), a JWKS and a token endpoint are real enough for
`gateway.oauth.upstream.UpstreamProvider.redeem`: the token endpoint answers any code with an
RS256 ID token for `subject` carrying `nonce`, and a fresh access token (both registered with
the log tripwire). Its authorization endpoint signs `subject` in at once: it keeps the request's
`nonce` and redirects back with a code, the `state` and `iss`, so a whole gateway can use it.
Set `userinfo` to a handler to script UserInfo; every request's path, `Authorization` header
and query are recorded in `seen`.

    async with ScriptedProvider() as provider:
        provider.userinfo = provider.json_userinfo({"sub": "alice", "groups": ["eng"]})
        upstream = provider.client(http)          # an UpstreamProvider for it
        claims = await upstream.redeem("code", "verifier", provider.nonce)
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlencode

from aiohttp import web
from joserfc.jwk import KeySet, RSAKey

from gateway.auth.authenticator import HttpSessionHolder
from gateway.config.auth import OidcLogin
from gateway.oauth.upstream import UpstreamProvider
from tests.support.local_issuer import LocalIssuer
from tests.support.processes import LOOPBACK, free_port
from tests.support.secrets import remember

CLIENT_ID = "gateway-at-provider"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Seen:
    path: str
    authorization: str | None
    query: str


class ScriptedProvider:
    def __init__(self, *, subject: str = "alice") -> None:
        self.port = free_port()
        self.issuer = f"http://{LOOPBACK}:{self.port}"
        self.subject = subject
        self.advertised_userinfo: str | None = self.issuer + "/userinfo"
        """The `userinfo_endpoint` discovery names (None: not advertised)."""
        self.nonce = secrets.token_urlsafe(16)
        self.id_token_claims: dict[str, Any] = {"email": "alice@example.test"}
        """Extra claims in the ID token (besides iss, sub, aud, exp, iat, nonce)."""
        self.signer = LocalIssuer()  # only its key and signing: never started
        self.signer.issuer = self.issuer
        self.other_key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig"})
        """Same `kid` as the provider's key, not published: for forged signatures."""
        self.access_tokens: list[str] = []
        self.seen: list[Seen] = []
        self.userinfo: Handler = self.json_userinfo({"sub": subject})
        self._runner: web.AppRunner | None = None

    def settings(self, **oidc: Any) -> OidcLogin:
        return OidcLogin.model_validate(
            {"issuer": self.issuer, "client_id": CLIENT_ID, "scopes": ["openid", "groups"], **oidc}
        )

    def client(self, http: HttpSessionHolder, **oidc: Any) -> UpstreamProvider:
        """The gateway's client for this provider; `oidc` are `OidcLogin` settings."""
        return UpstreamProvider(self.settings(**oidc), "http://127.0.0.1:1/oauth/callback", http)

    # -- scripted answers -------------------------------------------------------------------

    def json_userinfo(
        self, claims: dict[str, Any], *, content_type: str = "application/json"
    ) -> Handler:
        return self.raw_userinfo(json.dumps(claims).encode(), content_type=content_type)

    def raw_userinfo(
        self, body: bytes, *, status: int = 200, content_type: str = "application/json"
    ) -> Handler:
        async def answer(request: web.Request) -> web.StreamResponse:
            return web.Response(body=body, status=status, headers={"Content-Type": content_type})

        return answer

    def jwt_userinfo(self, claims: dict[str, Any], *, forged: bool = False) -> Handler:
        """A signed UserInfo response (`application/jwt`), by the provider's key unless
        `forged` (then by an unpublished key with the same `kid`)."""
        token = self.signer.mint(
            claims, header={"typ": "JWT"}, key=self.other_key if forged else None
        )
        return self.raw_userinfo(token.encode(), content_type="application/jwt")

    # -- server -----------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> None:
        self.seen.append(
            Seen(request.path, request.headers.get("Authorization"), request.query_string)
        )

    async def _discovery(self, request: web.Request) -> web.Response:
        await self._record(request)
        document: dict[str, Any] = {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/auth",
            "token_endpoint": self.issuer + "/token",
            "jwks_uri": self.issuer + "/jwks",
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
        }
        if self.advertised_userinfo is not None:
            document["userinfo_endpoint"] = self.advertised_userinfo
        return web.json_response(document)

    async def _jwks(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response(KeySet([self.signer.key]).as_dict(private=False))

    async def _token(self, request: web.Request) -> web.Response:
        await self._record(request)
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": self.nonce,
            **self.id_token_claims,
        }
        access_token = remember(secrets.token_urlsafe(32))
        self.access_tokens.append(access_token)
        id_token = self.signer.mint(claims, header={"typ": "JWT"})
        return web.json_response(
            {"access_token": access_token, "token_type": "Bearer", "id_token": id_token}
        )

    async def _authorize(self, request: web.Request) -> web.Response:
        await self._record(request)
        self.nonce = request.query.get("nonce", self.nonce)
        back = {"code": secrets.token_urlsafe(16), "state": request.query.get("state", "")}
        location = request.query["redirect_uri"] + "?" + urlencode({**back, "iss": self.issuer})
        raise web.HTTPFound(location)

    async def _userinfo(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return await self.userinfo(request)

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/.well-known/oauth-authorization-server", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/auth", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_route("*", "/userinfo", self._userinfo)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
