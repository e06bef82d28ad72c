"""A small, spec-checked OAuth 2.0 authorization server on loopback: a third-party provider
(GitHub-App style) whose users' tokens the gateway keeps for `upstream_auth: user_oauth`.

What it does, as such providers do by default:

- RFC 8414 metadata at `/.well-known/oauth-authorization-server` (PKCE S256, RFC 9207
  `authorization_response_iss_parameter_supported`, an RFC 7009 `revocation_endpoint`);
- `GET /authorize`: checks `response_type=code`, the client, the registered redirect URI and a
  PKCE S256 challenge, then signs a test user in at once and redirects back with `code`, the
  `state` and `iss`. The user is `login_hint` when the request has one, else `default_user`. With
  `interactive = True` it shows a one-field form instead (`user`), posted back to `/authorize`;
- `POST /token`: `authorization_code` (single-use code, PKCE verifier, same client and redirect
  URI) and `refresh_token` with ROTATION: each refresh returns a new refresh token and the old
  one is then invalid (`invalid_grant`); presenting an old one again revokes the whole family.
  Clients authenticate with `client_secret_basic` (confidential) or `client_id` in the form
  (public, when `client_secret` is None);
- `POST /revoke` (RFC 7009): revoking a refresh token revokes its family, an access token itself;
- `GET /user`: who an access token belongs to (`{"login": user}`), 401 for any other token.

Every request is logged in `requests` (method, path, the form or query, whether it carried
client authentication), so a test can count refresh requests or assert that no token request
was made. Every token, code and the client secret are registered with the log tripwire.

    async with OAuthProvider(redirect_uris=[callback]) as provider:
        settings = provider.user_oauth(encryption_keys=[key])   # the route's `upstream_auth`
        ...
        assert provider.count("/token", grant_type="refresh_token") == 1
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from html import escape
from typing import Any, Literal, Self
from urllib.parse import unquote_plus, urlencode

from aiohttp import web

from gateway.config.upstream_auth import UserOAuth
from tests.support.processes import LOOPBACK, free_port
from tests.support.secrets import remember

CLIENT_ID = "gateway-client"
IssMode = Literal["correct", "missing", "wrong", "repeated"]


@dataclass(frozen=True, slots=True)
class Seen:
    """One request the provider got."""

    method: str
    path: str
    params: dict[str, str]
    """The form (POST) or query (GET), last value of each name."""
    client_authenticated: bool


@dataclass
class _Family:
    """One authorization: its user, scope, current tokens, and whether it was revoked."""

    user: str
    scope: str
    refresh_token: str
    access_tokens: set[str] = field(default_factory=set)
    used_refresh_tokens: set[str] = field(default_factory=set)
    revoked: bool = False


@dataclass
class _Code:
    user: str
    challenge: str
    redirect_uri: str
    scope: str


def _challenge_of(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


async def _form(request: web.Request) -> dict[str, str]:
    """A form's fields (the last value of each), files ignored."""
    return {name: value for name, value in (await request.post()).items() if isinstance(value, str)}


def _error(status: int, error: str) -> web.Response:
    return web.json_response(
        {"error": error, "error_description": f"provider says: {error} (never shown)"},
        status=status,
        headers={"Cache-Control": "no-store"},
    )


class OAuthProvider:
    def __init__(
        self,
        *,
        redirect_uris: list[str] | None = None,
        client_secret: str | None = "generate",
        access_token_lifetime: int | None = 3600,
        default_user: str = "alice",
    ) -> None:
        self.port = free_port()
        self.issuer = f"http://{LOOPBACK}:{self.port}"
        self.redirect_uris = redirect_uris
        """Registered redirect URIs (None: any, for tests that never redirect)."""
        self.client_secret = (
            remember(secrets.token_urlsafe(24)) if client_secret == "generate" else client_secret
        )
        self.access_token_lifetime = access_token_lifetime
        """`expires_in` of new access tokens (None: not sent)."""
        self.default_user = default_user
        self.interactive = False
        self.iss_mode: IssMode = "correct"
        """What the authorization response carries as `iss`."""
        self.metadata_overrides: dict[str, Any] = {}
        """Merged over the metadata document (None values remove a member)."""
        self.hold_refresh: asyncio.Event | None = None
        """When set to an event, refresh answers wait for it (bounded by `hold_limit`)."""
        self.hold_limit = 20.0
        self.refresh_failure: tuple[int, str] | None = None
        """(status, error) every refresh request is answered with, when set."""
        self.refresh_arrived = asyncio.Event()
        """Set when a refresh request has arrived (before any `hold_refresh` wait)."""
        self.requests: list[Seen] = []
        self._codes: dict[str, _Code] = {}
        self._families: dict[str, _Family] = {}
        """By every refresh token ever issued, current or rotated out."""
        self._access: dict[str, tuple[_Family, float | None]] = {}
        self._runner: web.AppRunner | None = None

    # -- for tests ----------------------------------------------------------------------------

    def upstream_auth(self, **settings: Any) -> dict[str, Any]:
        """A route's `upstream_auth` for this provider as a config document holds it (give at
        least `encryption_keys`)."""
        document: dict[str, Any] = {
            "kind": "user_oauth",
            "issuer": self.issuer,
            "client_id": CLIENT_ID,
            "scopes": ["repo", "read:user"],
        }
        if self.client_secret is not None:
            document["client_secret"] = self.client_secret
        return {**document, **settings}

    def route(self, url: str, encryption_key: str, *, name: str = "files") -> dict[str, Any]:
        """An upstream `name` at `/<name>/mcp` (in front of `url`) whose users connect their
        accounts here (register `/oauth/connect/<name>/callback` as a redirect URI)."""
        return {
            "name": name,
            "route": f"/{name}/mcp",
            "url": url,
            "scopes": ["mcp:tools"],
            "upstream_auth": self.upstream_auth(scopes=["repo"], encryption_keys=[encryption_key]),
        }

    def user_oauth(self, **settings: Any) -> UserOAuth:
        """`upstream_auth` as the validated model."""
        return UserOAuth.model_validate(self.upstream_auth(**settings))

    def count(self, path: str, **params: str) -> int:
        """Requests to `path` whose params include all of `params`."""
        return sum(
            1
            for seen in self.requests
            if seen.path == path and all(seen.params.get(k) == v for k, v in params.items())
        )

    def owner_of(self, access_token: str) -> str | None:
        """The user an access token is valid for now (None: unknown, expired or revoked)."""
        entry = self._access.get(access_token)
        if entry is None:
            return None
        family, expires_at = entry
        if family.revoked or (expires_at is not None and expires_at <= time.time()):
            return None
        return family.user

    def is_revoked(self, refresh_token: str) -> bool:
        family = self._families.get(refresh_token)
        return family is not None and family.revoked

    def issue_grant(self, user: str, scope: str = "repo") -> dict[str, Any]:
        """Tokens for `user` as if they had just authorized (for tests that start connected)."""
        return self._new_family(user, scope)

    # -- endpoints ----------------------------------------------------------------------------

    def _metadata(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "revocation_endpoint": self.issuer + "/revoke",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
            "authorization_response_iss_parameter_supported": True,
        }
        document.update(self.metadata_overrides)
        return {key: value for key, value in document.items() if value is not None}

    async def _discovery(self, request: web.Request) -> web.Response:
        self._record(request, dict(request.query), False)
        return web.json_response(self._metadata())

    async def _authorize(self, request: web.Request) -> web.Response:
        params = dict(request.query) if request.method == "GET" else await _form(request)
        self._record(request, params, False)
        redirect_uri = params.get("redirect_uri", "")
        if params.get("client_id") != CLIENT_ID or (
            self.redirect_uris is not None and redirect_uri not in self.redirect_uris
        ):
            return web.Response(status=400, text="unknown client or redirect_uri")
        if params.get("response_type") != "code":
            return self._back(redirect_uri, {"error": "unsupported_response_type"}, params)
        challenge = params.get("code_challenge", "")
        if params.get("code_challenge_method") != "S256" or len(challenge) != 43:
            return self._back(redirect_uri, {"error": "invalid_request"}, params)
        user = params.get("user") or params.get("login_hint")
        if user is None and self.interactive:
            return self._login_form(params)
        code = remember(secrets.token_urlsafe(24))
        scope = params.get("scope", "")
        self._codes[code] = _Code(user or self.default_user, challenge, redirect_uri, scope)
        return self._back(redirect_uri, {"code": code}, params)

    def _login_form(self, params: dict[str, str]) -> web.Response:
        hidden = "".join(
            f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
            for k, v in params.items()
        )
        body = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in</title>'
            f'</head><body><form method="post" action="/authorize">{hidden}'
            '<label>User <input name="user" id="user"></label>'
            '<button type="submit" id="authorize">Authorize</button></form></body></html>'
        )
        return web.Response(text=body, content_type="text/html")

    def _back(
        self, redirect_uri: str, result: dict[str, str], params: dict[str, str]
    ) -> web.Response:
        pairs = list(result.items())
        if "state" in params:
            pairs.append(("state", params["state"]))
        if self.iss_mode == "correct":
            pairs.append(("iss", self.issuer))
        elif self.iss_mode == "wrong":
            pairs.append(("iss", self.issuer + "/other"))
        elif self.iss_mode == "repeated":
            pairs += [("iss", self.issuer), ("iss", self.issuer)]
        separator = "&" if "?" in redirect_uri else "?"
        location = redirect_uri + separator + urlencode(pairs)
        return web.Response(status=302, headers={"Location": location})

    def _client(self, request: web.Request, form: dict[str, str]) -> bool:
        """Whether the request authenticates as our client (RFC 6749 section 2.3.1)."""
        header = request.headers.get("Authorization", "")
        if self.client_secret is None:
            return not header and form.get("client_id") == CLIENT_ID
        if not header.startswith("Basic "):
            return False
        try:
            pair = base64.b64decode(header[6:], validate=True).decode()
        except ValueError:
            return False
        client_id, _, secret = pair.partition(":")
        return unquote_plus(client_id) == CLIENT_ID and hmac.compare_digest(
            unquote_plus(secret).encode(), self.client_secret.encode()
        )

    async def _token(self, request: web.Request) -> web.Response:
        form = await _form(request)
        authenticated = self._client(request, form)
        self._record(request, form, authenticated)
        if not authenticated:
            return _error(401, "invalid_client")
        match form.get("grant_type"):
            case "authorization_code":
                return self._redeem(form)
            case "refresh_token":
                self.refresh_arrived.set()
                if self.hold_refresh is not None:
                    await asyncio.wait_for(self.hold_refresh.wait(), self.hold_limit)
                if self.refresh_failure is not None:
                    return _error(*self.refresh_failure)
                return self._refresh(form.get("refresh_token", ""))
            case _:
                return _error(400, "unsupported_grant_type")

    def _redeem(self, form: dict[str, str]) -> web.Response:
        code = self._codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        if (
            code is None
            or code.redirect_uri != form.get("redirect_uri")
            or not hmac.compare_digest(_challenge_of(verifier).encode(), code.challenge.encode())
        ):
            return _error(400, "invalid_grant")
        return self._answer(self._new_family(code.user, code.scope))

    def _refresh(self, refresh_token: str) -> web.Response:
        family = self._families.get(refresh_token)
        if family is None or family.revoked:
            return _error(400, "invalid_grant")
        if refresh_token != family.refresh_token:  # reuse of a rotated-out token
            family.revoked = True
            return _error(400, "invalid_grant")
        family.used_refresh_tokens.add(refresh_token)
        family.refresh_token = remember(secrets.token_urlsafe(32))
        self._families[family.refresh_token] = family
        return self._answer(self._tokens(family))

    def _new_family(self, user: str, scope: str) -> dict[str, Any]:
        family = _Family(user, scope, remember(secrets.token_urlsafe(32)))
        self._families[family.refresh_token] = family
        return self._tokens(family)

    def _tokens(self, family: _Family) -> dict[str, Any]:
        access = remember(f"gho_{secrets.token_urlsafe(24)}")
        lifetime = self.access_token_lifetime
        self._access[access] = (family, None if lifetime is None else time.time() + lifetime)
        family.access_tokens.add(access)
        answer: dict[str, Any] = {
            "access_token": access,
            "token_type": "bearer",
            "refresh_token": family.refresh_token,
            "scope": family.scope,
        }
        if lifetime is not None:
            answer["expires_in"] = lifetime
        return answer

    def _answer(self, tokens: dict[str, Any]) -> web.Response:
        return web.json_response(tokens, headers={"Cache-Control": "no-store"})

    async def _revoke(self, request: web.Request) -> web.Response:
        form = await _form(request)
        authenticated = self._client(request, form)
        self._record(request, form, authenticated)
        if not authenticated:
            return _error(401, "invalid_client")
        token = form.get("token", "")
        family = self._families.get(token)
        if family is not None:
            family.revoked = True
        elif token in self._access:
            entry = self._access.pop(token)
            entry[0].access_tokens.discard(token)
        return web.Response(status=200)  # RFC 7009 section 2.2: unknown tokens too

    async def _user(self, request: web.Request) -> web.Response:
        self._record(request, {}, False)
        header = request.headers.get("Authorization", "")
        user = self.owner_of(header[7:]) if header.startswith("Bearer ") else None
        if user is None:
            return web.json_response({"message": "Bad credentials"}, status=401)
        return web.json_response({"login": user})

    def _record(self, request: web.Request, params: dict[str, str], authenticated: bool) -> None:
        self.requests.append(Seen(request.method, request.path, dict(params), authenticated))

    # -- server -------------------------------------------------------------------------------

    async def start(self) -> Self:
        """Start (or start again, on the same port, keeping every grant)."""
        app = web.Application()
        app.router.add_get("/.well-known/oauth-authorization-server", self._discovery)
        app.router.add_route("*", "/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_post("/revoke", self._revoke)
        app.router.add_get("/user", self._user)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()
        return self

    async def stop(self) -> None:
        """Stop listening: the provider is down (`start` brings it back)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
