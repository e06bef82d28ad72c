"""A small RFC 8693 token exchange server on a real loopback socket, checking what it is sent.

It authenticates each client by the method it was registered with (RFC 6749 section 2.3.1
`client_secret_basic` / `client_secret_post`, RFC 7523 `private_key_jwt`: the assertion's
signature against the registered public key, `iss` = `sub` = the client, `aud` the token
endpoint, `exp`, a `jti` never seen before), checks the exchange request (RFC 8693 section 2.1),
validates the `subject_token` against the subject issuer's JWKS (fetched over HTTP) and expiry,
and issues its own RS256 JWT access token (RFC 9068 shape) for the requested audience/resource
with the subject's `sub`, verifiable at its `/jwks` (found through its OpenID discovery).
It counts token requests, can be told to answer an OAuth error or a body of the test's
choosing, can hold its answers until released, and can be stopped and started again on the
same port.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import aiohttp
from aiohttp import web
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from tests.support.local_issuer import LocalIssuer
from tests.support.processes import free_port
from tests.support.secrets import remember

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SERVERS_OWN_WORDS = "exchange server internals: policy 7b rejected the subject"
"""The `error_description` of every error answer: a test checks it never reaches a client."""


class _RejectedError(Exception):
    def __init__(self, status: int, error: str, why: str) -> None:
        super().__init__(why)
        self.status, self.error, self.why = status, error, why


@dataclass
class RegisteredClient:
    method: str
    secret: str | None = field(default=None, repr=False)
    public_key: ECKey | RSAKey | None = None


@dataclass
class ExchangeRequest:
    """What one accepted exchange asked for (no secret, no token)."""

    client_id: str
    method: str
    audience: str | None
    resource: str | None
    scope: str | None
    subject: str


class ExchangeServer:
    """`await server.start()`; `stop()` and `start()` again keep the port, keys and counts."""

    def __init__(self, subject_issuer: LocalIssuer, *, leeway: int = 30) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.token_endpoint = self.issuer + "/token"
        self.subject_issuer = subject_issuer
        self.leeway = leeway
        self.key = RSAKey.generate_key(2048, parameters={"kid": "x1", "use": "sig"})
        self.clients: dict[str, RegisteredClient] = {}
        self.token_requests = 0
        """Every POST to the token endpoint, accepted or not."""
        self.exchanges: list[ExchangeRequest] = []
        """The exchanges answered with a token."""
        self.rejections: list[str] = []
        """Why each refused request was refused (for a failing test's message)."""
        self.issued: list[str] = []
        self.expires_in: int | None = 300
        self.error: tuple[int, str] | None = None
        """(status, OAuth error) to answer every authenticated request with."""
        self.raw_answer: tuple[int, Any] | None = None
        """(status, body) to answer every authenticated request with: JSON of a value, or
        the bytes as they are."""
        self.hold: asyncio.Event | None = None
        """When set, requests wait for it before being answered."""
        self.received = asyncio.Event()
        """Set when a token request arrives."""
        self._jtis: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    def register(
        self,
        client_id: str,
        method: str,
        *,
        secret: str | None = None,
        public_key: ECKey | RSAKey | None = None,
    ) -> None:
        self.clients[client_id] = RegisteredClient(method, secret, public_key)

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a token this server issued, its signature checked."""
        return dict(jwt.decode(token, self.key, algorithms=["RS256"]).claims)

    # -- server ------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_get("/.well-known/openid-configuration", self._metadata)
        app.router.add_get("/jwks", self._jwks)
        self._http = aiohttp.ClientSession()
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _metadata(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "token_endpoint": self.token_endpoint,
                "jwks_uri": self.issuer + "/jwks",
                "grant_types_supported": [TOKEN_EXCHANGE],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(KeySet([self.key]).as_dict(private=False))

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        self.received.set()
        if self.hold is not None:
            await self.hold.wait()
        try:
            if request.content_type != "application/x-www-form-urlencoded":
                raise _RejectedError(400, "invalid_request", "not a form")
            form = {name: str(value) for name, value in (await request.post()).items()}
            client_id, method = self._authenticate(request, form)
            if self.raw_answer is not None:
                status, body = self.raw_answer
                if isinstance(body, bytes):
                    return web.Response(body=body, status=status, content_type="application/json")
                return web.json_response(body, status=status)
            if self.error is not None:
                raise _RejectedError(*self.error, "configured error")
            exchange = await self._check_exchange(form, client_id, method)
        except _RejectedError as rejected:
            self.rejections.append(rejected.why)
            answer = {"error": rejected.error, "error_description": SERVERS_OWN_WORDS}
            return web.json_response(answer, status=rejected.status)
        self.exchanges.append(exchange)
        return web.json_response(self._issue(exchange), headers={"Cache-Control": "no-store"})

    # -- client authentication ---------------------------------------------------------------

    def _authenticate(self, request: web.Request, form: dict[str, str]) -> tuple[str, str]:
        """The authenticated client id and its method; exactly one method may be used."""
        header = request.headers.get("Authorization")
        if header is not None:
            return self._basic(header, form), "client_secret_basic"
        if "client_assertion" in form:
            return self._assertion(form), "private_key_jwt"
        if "client_secret" in form:
            client = self._client(form.get("client_id", ""), "client_secret_post")
            _same_secret(form["client_secret"], client)
            return form["client_id"], "client_secret_post"
        raise _RejectedError(401, "invalid_client", "no client authentication")

    def _client(self, client_id: str, method: str) -> RegisteredClient:
        client = self.clients.get(client_id)
        if client is None or client.method != method:
            why = f"{client_id!r} not registered for {method}"
            raise _RejectedError(401, "invalid_client", why)
        return client

    def _basic(self, header: str, form: dict[str, str]) -> str:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or "client_secret" in form or "client_assertion" in form:
            raise _RejectedError(401, "invalid_client", "not Basic, or more than one method")
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise _RejectedError(401, "invalid_client", "Basic credentials not base64") from None
        raw_id, colon, raw_secret = decoded.partition(":")
        if not colon:
            raise _RejectedError(401, "invalid_client", "Basic credentials without ':'")
        client_id = unquote_plus(raw_id)  # RFC 6749 section 2.3.1: form-urlencoded first
        if form.get("client_id", client_id) != client_id:
            raise _RejectedError(401, "invalid_client", "client_id differs from Basic's")
        _same_secret(unquote_plus(raw_secret), self._client(client_id, "client_secret_basic"))
        return client_id

    def _assertion(self, form: dict[str, str]) -> str:
        if form.get("client_assertion_type") != JWT_BEARER:
            raise _RejectedError(401, "invalid_client", "wrong client_assertion_type")
        assertion = form["client_assertion"]
        claimed = _unverified_issuer(assertion)
        client = self._client(claimed, "private_key_jwt")
        assert client.public_key is not None
        try:
            claims = jwt.decode(assertion, client.public_key, ["ES256", "RS256"]).claims
        except (JoseError, ValueError):
            raise _RejectedError(401, "invalid_client", "assertion signature invalid") from None
        exp, jti = claims.get("exp"), claims.get("jti")
        problems = {
            "iss": claims.get("iss") != claimed,
            "sub": claims.get("sub") != claimed,
            "aud": claims.get("aud") not in (self.token_endpoint, [self.token_endpoint]),
            "exp": not isinstance(exp, int) or exp <= time.time(),
            "jti": not isinstance(jti, str) or jti in self._jtis,
            "client_id": form.get("client_id", claimed) != claimed,
        }
        wrong = [name for name, bad in problems.items() if bad]
        if wrong:
            raise _RejectedError(401, "invalid_client", f"assertion claims wrong: {wrong}")
        self._jtis.add(str(jti))
        return claimed

    # -- the exchange ------------------------------------------------------------------------

    async def _check_exchange(
        self, form: dict[str, str], client_id: str, method: str
    ) -> ExchangeRequest:
        if form.get("grant_type") != TOKEN_EXCHANGE:
            raise _RejectedError(400, "unsupported_grant_type", "not a token exchange")
        if form.get("subject_token_type") != ACCESS_TOKEN_TYPE:
            raise _RejectedError(400, "invalid_request", "subject_token_type")
        if form.get("requested_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
            raise _RejectedError(400, "invalid_request", "requested_token_type")
        if "actor_token" in form or not form.get("subject_token"):
            raise _RejectedError(400, "invalid_request", "no subject_token, or an actor_token")
        if "audience" not in form and "resource" not in form:
            raise _RejectedError(400, "invalid_target", "neither audience nor resource")
        subject = await self._subject(form["subject_token"])
        return ExchangeRequest(
            client_id,
            method,
            form.get("audience"),
            form.get("resource"),
            form.get("scope"),
            subject,
        )

    async def _subject(self, token: str) -> str:
        """The subject token's `sub`, its signature checked against the issuer's JWKS."""
        assert self._http is not None
        async with self._http.get(self.subject_issuer.jwks_uri) as response:
            keys = KeySet.import_key_set(await response.json())
        try:
            claims = jwt.decode(token, keys, algorithms=["RS256"]).claims
        except (JoseError, ValueError):
            raise _RejectedError(400, "invalid_grant", "subject token signature") from None
        if claims.get("iss") != self.subject_issuer.issuer:
            raise _RejectedError(400, "invalid_grant", "subject token issuer")
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp + self.leeway <= time.time():
            raise _RejectedError(400, "invalid_grant", "subject token expired")
        subject = claims.get("sub")
        if not isinstance(subject, str):
            raise _RejectedError(400, "invalid_grant", "subject token has no sub")
        return subject

    def _issue(self, exchange: ExchangeRequest) -> dict[str, Any]:
        now = int(time.time())
        targets = [t for t in (exchange.audience, exchange.resource) if t is not None]
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": exchange.subject,
            "aud": targets[0] if len(targets) == 1 else targets,
            "client_id": exchange.client_id,
            "act": {"sub": exchange.client_id},
            "iat": now,
            "exp": now + (self.expires_in or 300),
            "jti": secrets.token_urlsafe(16),
        }
        if exchange.scope:
            claims["scope"] = exchange.scope
        header = {"alg": "RS256", "kid": "x1", "typ": "at+jwt"}
        token = remember(jwt.encode(header, claims, self.key, algorithms=["RS256"]))
        self.issued.append(token)
        answer: dict[str, Any] = {
            "access_token": token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
        }
        if self.expires_in is not None:
            answer["expires_in"] = self.expires_in
        return answer


def _same_secret(given: str, client: RegisteredClient) -> None:
    expected = (client.secret or "").encode()
    if not client.secret or not hmac.compare_digest(given.encode(), expected):
        raise _RejectedError(401, "invalid_client", "wrong client secret")


def _unverified_issuer(assertion: str) -> str:
    """The `iss` an assertion claims, read before its signature is checked (to pick the key)."""
    try:
        payload = assertion.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        raise _RejectedError(401, "invalid_client", "assertion not a JWT") from None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    if not isinstance(issuer, str):
        raise _RejectedError(401, "invalid_client", "assertion without iss")
    return issuer
