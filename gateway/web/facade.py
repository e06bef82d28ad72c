"""The authorization-server facade over HTTP: metadata, JWKS, registration, the authorize,
sign-in and consent pages, token and revocation endpoints.

Protocol decisions are in `gateway.oauth.facade`; this module parses requests, renders pages
and JSON, and sets the headers every such answer needs: `Cache-Control: no-store` everywhere,
and on pages a Content-Security-Policy that forbids framing (clickjacking) and any script.

The sign-in and consent forms are accepted only from the gateway's own pages: their POST must
carry `Origin` equal to the origin of `server.public_url` (browsers send it on form posts), so
another site, even one in `server.allowed_origins`, cannot submit them (login CSRF, forged
consent). Unexpected input gets a 4xx and a logged reason, never a 500.
"""

from __future__ import annotations

import html
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import hdrs, web
from multidict import MultiDict

from gateway.auth.authenticator import HttpSessionHolder
from gateway.config.auth import AuthorizationServerSettings, ClientIdMetadataDocuments
from gateway.config.model import GatewayConfig
from gateway.oauth.client_documents import ClientDocuments
from gateway.oauth.facade import (
    AuthorizationServer,
    ConsentNeeded,
    Described,
    ErrorPageError,
    OAuthError,
    Redirect,
    RedirectError,
    Settings,
    SignInFailed,
    basic_credentials,
)
from gateway.oauth.issuer_check import IssuerMismatchError, check_issuer
from gateway.oauth.signing import SigningKeys
from gateway.oauth.store import (
    NO_CLIENT_AUTH,
    SIGN_IN_STAGE,
    UPSTREAM_STAGE,
    AuthorizationRequest,
    ClientRecord,
    KvAuthStore,
    MemoryStore,
    SignInSession,
    digest,
)
from gateway.oauth.upstream import (
    UpstreamLoginError,
    UpstreamProvider,
    UpstreamProviderUnusableError,
    pkce_pair,
)
from gateway.oauth.users import LocalUsers
from gateway.observability.logging import get_logger
from gateway.policy.grants import Grants, rule
from gateway.policy.scopes import ScopeImplications
from gateway.store.kv import KeyValueStore, StoreUnavailableError
from gateway.store.memory import MemoryKV
from gateway.web.keys import CONTEXT_KEY

audit = get_logger("gateway.audit")

MAX_FORM_BYTES = 16 * 1024
MAX_FORM_FIELDS = 64
MAX_REASON_CHARS = 200
"""Refusal reasons can quote a parameter name the client chose: logged this long at most."""
MAX_REGISTRATION_BYTES = 32 * 1024
PageHandler = Callable[[web.Request], Awaitable[web.Response]]
RATE_KEYS = 100_000
"""Rate-limit counters kept in memory (without a shared store); past it the oldest go."""

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    # Not no-referrer: under it browsers send `Origin: null` with the pages' own form posts,
    # which the edge's Origin check refuses (403). same-origin still sends nothing elsewhere.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
JSON_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_DEFAULT_PORTS = {"http": 80, "https": 443}
PROVIDER_UNUSABLE = (
    "<p>The identity provider is not set up in a way this server can use. "
    "Tell the administrator.</p>"
)


def origin_of(url: str) -> str:
    """The serialized origin of an http(s) URL (RFC 6454 section 6.2): scheme://host[:port],
    lowercase, the default port left out; as browsers send it in `Origin`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = parts.port
    suffix = "" if port is None or port == _DEFAULT_PORTS.get(parts.scheme) else f":{port}"
    return f"{parts.scheme}://{host}{suffix}"


def foreign_form_post(origins: list[str], own_origin: str) -> str | None:
    """Why a form POST with these `Origin` values did not come from the gateway's own pages
    (`missing`, `repeated`, `null`, `other`), or None when it did."""
    if not origins:
        return "missing"
    if len(origins) > 1:
        return "repeated"
    if origins[0] == "null":
        return "null"
    if origins[0].lower() != own_origin:
        return "other"
    return None


def build_authorization_server(
    config: GatewayConfig, shared: KeyValueStore | None = None
) -> AuthorizationServer:
    """The facade for `config.auth.authorization_server` (which must be set); its state in
    `shared` (Redis, every replica) or else in this process's memory."""
    settings = config.auth.authorization_server
    assert settings is not None
    base = config.public_base()
    protected = [upstream for upstream in config.upstreams if not upstream.allow_anonymous]
    resources = {base + upstream.route: tuple(upstream.scopes) for upstream in protected}
    names = {base + upstream.route: upstream.resource_name or upstream.name
             for upstream in protected}  # fmt: skip
    keys = (
        SigningKeys.from_texts(
            settings.signing_key.get_secret_value(),
            (key.get_secret_value() for key in settings.previous_signing_keys),
        )
        if settings.signing_key is not None
        else SigningKeys.generate()
    )
    users = None
    if settings.login.local is not None:
        users = LocalUsers.load(Path(settings.login.local.users_file))
    now = time.time()
    clients = {
        client.client_id: ClientRecord(
            client_id=client.client_id,
            redirect_uris=tuple(client.redirect_uris),
            created_at=now,
            client_name=client.client_name,
            token_endpoint_auth_method=NO_CLIENT_AUTH
            if client.client_secret is None
            else "client_secret_basic",
            secret_hash=None
            if client.client_secret is None
            else digest(client.client_secret.get_secret_value()),
        )
        for client in settings.clients
    }
    return AuthorizationServer(
        settings=Settings(
            issuer=base,
            resources=resources,
            access_token_lifetime=int(settings.access_token_lifetime),
            refresh_token_lifetime=settings.refresh_token_lifetime,
            code_lifetime=settings.code_lifetime,
            login_lifetime=settings.login_lifetime,
            dynamic_registration=settings.dynamic_registration,
            session_idle=settings.sign_in_session.idle_timeout
            if settings.sign_in_session.enabled
            else 0.0,
            session_lifetime=settings.sign_in_session.max_lifetime,
            resource_names=names,
            scope_descriptions=dict(settings.scope_descriptions),
        ),
        store=KvAuthStore(shared) if shared is not None else MemoryStore(),
        keys=keys,
        grants=Grants(
            [rule(grant.when, grant.scopes) for grant in settings.grants],
            ScopeImplications(config.scopes.implies),
        ),
        users=users,
        clients=clients,
        documents=_client_documents(settings.client_id_metadata_documents),
    )


def _client_documents(settings: ClientIdMetadataDocuments) -> ClientDocuments | None:
    if not settings.enabled:
        return None
    if settings.allow_loopback_for_testing:
        audit.warning("client_documents_from_loopback_allowed", note="for tests only")
    return ClientDocuments(
        allow_loopback=settings.allow_loopback_for_testing,
        max_bytes=settings.max_bytes,
        timeout=settings.timeout,
    )


class RateLimit:
    """At most `per_minute` events per key in each clock minute (a fixed window), counted in
    the state store, so replicas share the count."""

    def __init__(self, kv: KeyValueStore, kind: str, per_minute: int) -> None:
        self._kv = kv
        self._kind = kind
        self._per_minute = per_minute

    async def allow(self, key: str) -> bool:
        window = int(time.time() // 60)
        name = f"rate:{self._kind}:{window}:{digest(key)}"
        return await self._kv.increment(name, 60.0) <= self._per_minute


class FacadeEndpoints:
    def __init__(
        self,
        server: AuthorizationServer,
        config: GatewayConfig,
        http: HttpSessionHolder,
        shared: KeyValueStore | None = None,
    ) -> None:
        self.server = server
        settings = config.auth.authorization_server
        assert settings is not None  # the app installs these endpoints only in facade mode
        self.own_origin = origin_of(server.settings.issuer)
        self.upstream = None
        if settings.login.oidc is not None:
            callback = server.settings.issuer + "/oauth/callback"
            self.upstream = UpstreamProvider(settings.login.oidc, callback, http)
        self.cookies = Cookies(server.settings.issuer, settings)
        counters = shared if shared is not None else MemoryKV({"rate": RATE_KEYS})
        self._registrations = RateLimit(counters, "register", settings.registrations_per_minute)
        self._sign_ins = RateLimit(counters, "sign-in", settings.sign_ins_per_minute)

    def install(self, app: web.Application) -> None:
        metadata = self.metadata
        app.router.add_get("/.well-known/oauth-authorization-server", metadata, allow_head=False)
        app.router.add_get("/.well-known/openid-configuration", metadata, allow_head=False)
        app.router.add_get("/oauth/jwks", self.jwks, allow_head=False)
        app.router.add_post("/oauth/register", _fail_closed(self.register))
        app.router.add_get(
            "/oauth/authorize", _fail_closed(self.authorize, page=True), allow_head=False
        )
        # Users sign in either on the gateway's form or at the upstream provider, which sends
        # them back to the callback; the other endpoint does not exist (404 like any path).
        if self.upstream is None:
            app.router.add_post("/oauth/sign-in", _fail_closed(self.sign_in, page=True))
        else:
            app.router.add_get(
                "/oauth/callback", _fail_closed(self.callback, page=True), allow_head=False
            )
        app.router.add_post("/oauth/consent", _fail_closed(self.consent, page=True))
        app.router.add_get("/oauth/sign-out", self.sign_out_page, allow_head=False)
        app.router.add_post("/oauth/sign-out", _fail_closed(self.sign_out, page=True))
        app.router.add_post("/oauth/token", _fail_closed(self.token))
        app.router.add_post("/oauth/revoke", _fail_closed(self.revoke))

    # -- documents ------------------------------------------------------------------------------

    async def metadata(self, request: web.Request) -> web.Response:
        return web.json_response(
            self.server.metadata(), headers={"Cache-Control": "public, max-age=300"}
        )

    async def jwks(self, request: web.Request) -> web.Response:
        return web.json_response(
            self.server.keys.jwks(), headers={"Cache-Control": "public, max-age=300"}
        )

    # -- JSON endpoints -------------------------------------------------------------------------

    async def register(self, request: web.Request) -> web.Response:
        if not await self._registrations.allow(request[CONTEXT_KEY].client or ""):
            return _refused("registration_refused", OAuthError("slow_down", "Too many "
                            "registrations; retry later", 429))  # fmt: skip
        try:
            document = await _json_body(request)
            secret = secrets.token_urlsafe(32)
            answer = await self.server.register(
                document, client_id=secrets.token_urlsafe(16), secret=secret
            )
        except OAuthError as error:
            return _refused("registration_refused", error)
        audit.info("client_registered", client_id=answer["client_id"])
        return web.json_response(answer, status=201, headers=JSON_HEADERS)

    async def token(self, request: web.Request) -> web.Response:
        try:
            form = await _form(request)
            answer = await self.server.token(form, _basic(request))
        except OAuthError as error:
            if error.error == "invalid_grant":  # a replayed or stolen code or refresh token
                audit.warning("token_refused", error=error.error, reason=error.description)
                return _oauth_error(error)
            return _refused("token_refused", error)
        return web.json_response(answer, headers=JSON_HEADERS)

    async def revoke(self, request: web.Request) -> web.Response:
        try:
            await self.server.revoke(await _form(request), _basic(request))
        except OAuthError as error:
            return _refused("revocation_refused", error)
        return web.Response(status=200, headers=JSON_HEADERS)

    # -- pages ----------------------------------------------------------------------------------

    async def authorize(self, request: web.Request) -> web.Response:
        try:
            _, parked = await self.server.check_authorization(request.query)
        except ErrorPageError as error:
            return _error_page("authorization_refused", error.description)
        except RedirectError as error:
            audit.info("authorization_refused", error=error.error)
            return _redirect(error.location)
        browser = self.cookies.flow(request)
        session = await self._session(request)
        outcome = await self.server.authorize(parked, session, digest(browser))
        if isinstance(outcome, Redirect):
            return _redirect(outcome.location)
        response = _consent_page(outcome)
        self.cookies.set_flow(response, browser)
        return response

    async def consent(self, request: web.Request) -> web.Response:
        if (refused := self._foreign_form_post(request)) is not None:
            return refused
        try:
            form = await _form(request)
            outcome = await self.server.consent(
                form.get("state", ""),
                approve=form.get("decision") == "approve",
                browser=self.cookies.flow_digest(request),
                session=await self._session(request),
            )
        except OAuthError as error:
            return _error_page("consent_refused", error.description, error.status)
        except ErrorPageError as error:
            return _error_page("consent_refused", error.description)
        if isinstance(outcome, Redirect):
            return _redirect(outcome.location)
        return await self._start_sign_in(request, outcome.request)

    async def _start_sign_in(
        self, request: web.Request, parked: AuthorizationRequest
    ) -> web.Response:
        """After consent: the local sign-in form, or off to the upstream provider; either way
        bound to this browser's flow cookie."""
        browser = self.cookies.flow_digest(request)
        if self.upstream is None:
            state = await self.server.begin(parked, stage=SIGN_IN_STAGE, browser=browser)
            return _sign_in_page(state, await self.server.describe(parked))
        verifier, challenge = pkce_pair()
        nonce = secrets.token_urlsafe(24)
        state = await self.server.begin(
            parked, stage=UPSTREAM_STAGE, browser=browser, code_verifier=verifier, nonce=nonce
        )
        fresh = {"prompt": "login"} if "login" in parked.prompt else {}
        if parked.max_age is not None:
            fresh["max_age"] = str(parked.max_age)
        try:
            location = await self.upstream.authorization_url(state, nonce, challenge, fresh=fresh)
        except UpstreamProviderUnusableError as error:
            audit.warning("upstream_provider_unusable", reason=error.reason)
            return _page(503, "Sign-in unavailable", PROVIDER_UNUSABLE)
        except UpstreamLoginError as error:
            # Not error: any client can start a sign-in; the outage shows as 503s in the access log.
            audit.warning("upstream_login_unavailable", reason=error.reason)
            return _page(503, "Sign-in unavailable", "<p>The identity provider cannot be "
                         "reached right now. Try again later.</p>")  # fmt: skip
        return _redirect(location)

    async def callback(self, request: web.Request) -> web.Response:
        """The upstream provider sends the user back here. The `state` must be one this
        browser started (its flow cookie; login CSRF), and the provider's `iss` is checked
        before the code goes anywhere (RFC 9207 section 2.4); its error text is never shown or
        passed on. Routed only with federated login."""
        upstream = self.upstream
        if upstream is None:
            return _page(404, "Not found", "<p>There is nothing here.</p>")
        query = request.query
        states = query.getall("state", ())
        browser = self.cookies.flow_digest(request)
        txn = (
            await self.server.take_upstream_login(states[0], browser) if len(states) == 1 else None
        )
        if txn is None or txn.code_verifier is None or txn.nonce is None:
            return _error_page("upstream_callback_refused", "This sign-in has expired, is not "
                               "valid or was started in another browser. Start again from "
                               "your application.")  # fmt: skip
        parked = txn.request
        try:
            metadata = await upstream.metadata()
            check_issuer(
                query, expected_issuer=metadata.issuer, iss_supported=metadata.iss_supported
            )
        except (IssuerMismatchError, UpstreamLoginError) as error:
            audit.warning("upstream_login_refused", reason=error.reason)
            return _redirect(self.server.redirect(
                parked.redirect_uri, parked.state, error="access_denied",
                error_description="The sign-in could not be verified",
            ))  # fmt: skip
        codes = query.getall("code", ())
        if "error" in query or len(codes) != 1:
            audit.info("upstream_login_failed")
            return _redirect(self.server.redirect(
                parked.redirect_uri, parked.state, error="access_denied",
                error_description="Sign-in at the identity provider did not complete",
            ))  # fmt: skip
        try:
            claims = await upstream.redeem(codes[0], txn.code_verifier, txn.nonce)
        except UpstreamLoginError as error:
            audit.warning("upstream_login_refused", reason=error.reason)
            return _redirect(self.server.redirect(
                parked.redirect_uri, parked.state, error="access_denied",
                error_description="The sign-in could not be verified",
            ))  # fmt: skip
        audit.info("signed_in", sub=str(claims["sub"])[:128], via="oidc",
                   client_id=parked.client_id)  # fmt: skip
        outcome = await self.server.signed_in(parked, str(claims["sub"]), dict(claims))
        return await self._signed_in(request, outcome)

    async def sign_in(self, request: web.Request) -> web.Response:
        if self.server.users is None:  # users sign in at the upstream provider
            return _page(404, "Not found", "<p>There is no sign-in form here.</p>")
        if (refused := self._foreign_form_post(request)) is not None:
            return refused
        try:
            form = await _form(request)
        except OAuthError as error:
            return _error_page("sign_in_refused", error.description, error.status)
        state = form.get("state", "")
        username, password = form.get("username", ""), form.get("password", "")
        if not await self._sign_ins.allow(f"{request[CONTEXT_KEY].client}|{username}"):
            audit.warning("sign_in_refused", reason="rate limited", user=username[:64])
            return _page(429, "Too many attempts", "<p>Wait a minute, then try again.</p>")
        browser = self.cookies.flow_digest(request)
        try:
            outcome = await self.server.sign_in_local(state, username, password, browser)
        except ErrorPageError as error:
            return _error_page("sign_in_refused", error.description)
        if isinstance(outcome, SignInFailed):
            audit.warning("sign_in_failed", user=username[:64])
            return _sign_in_page(outcome.state, outcome.described, failed=True)
        audit.info("signed_in", user=username[:64], via="local")
        return await self._signed_in(request, outcome)

    async def _signed_in(self, request: web.Request, outcome: Redirect) -> web.Response:
        """Back to the client, with the new sign-in session's cookie; a session the browser
        held before (`prompt=login`, `max_age`) ends, so a cookie names one sign-in only."""
        response = _redirect(outcome.location)
        if outcome.session is not None:
            previous = request.cookies.get(self.cookies.session_name)
            if previous:
                await self.server.store.end_session(previous)
            self.cookies.set_session(response, outcome.session)
        return response

    async def _session(self, request: web.Request) -> SignInSession | None:
        return await self.server.session(request.cookies.get(self.cookies.session_name))

    async def sign_out_page(self, request: web.Request) -> web.Response:
        """A page with one button: the sign-out itself is a POST (with `Origin` checked)."""
        body = (
            "<p>Sign out of this gateway in this browser. Applications keep the access they "
            "were given until it expires or is revoked.</p>"
            '<form method="post" action="/oauth/sign-out">'
            '<button type="submit">Sign out</button></form>'
        )
        return _page(200, "Sign out", body)

    async def sign_out(self, request: web.Request) -> web.Response:
        if (refused := self._foreign_form_post(request)) is not None:
            return refused
        await self.server.sign_out(request.cookies.get(self.cookies.session_name))
        response = _page(200, "Signed out", "<p>You are signed out of this gateway.</p>")
        self.cookies.clear_session(response)
        return response

    def _foreign_form_post(self, request: web.Request) -> web.Response | None:
        """A 403 page for a sign-in or consent POST not sent from the gateway's own pages."""
        reason = foreign_form_post(request.headers.getall(hdrs.ORIGIN, []), self.own_origin)
        if reason is None:
            return None
        audit.warning("form_post_refused", path=request.path, reason=reason)
        return _page(403, "Cannot continue", "<p>This form can only be sent from this "
                     "server's own page. Start again from your application.</p>")  # fmt: skip


def _basic(request: web.Request) -> tuple[str, str] | None:
    values = request.headers.getall("Authorization", ())
    if len(values) > 1:
        raise OAuthError("invalid_request", "One Authorization header")
    return basic_credentials(values[0] if values else None)


async def _form(request: web.Request) -> MultiDict[str]:
    """An application/x-www-form-urlencoded body (UTF-8, at most 16 KiB and 64 fields); any
    other body is an `invalid_request` (HTML forms and OAuth clients send nothing else)."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "Send an application/x-www-form-urlencoded body")
    if (request.charset or "utf-8").lower() != "utf-8":
        raise OAuthError("invalid_request", "Send the form in UTF-8")
    body = await _bounded_body(request, MAX_FORM_BYTES, "invalid_request")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError:  # not UTF-8 (UnicodeDecodeError), or too many fields
        raise OAuthError("invalid_request", "The form is not valid UTF-8 form data") from None
    return MultiDict(pairs)


async def _json_body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise OAuthError("invalid_client_metadata", "Send the client metadata as JSON")
    body = await _bounded_body(request, MAX_REGISTRATION_BYTES, "invalid_client_metadata")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # not UTF-8 or not JSON, or nested too deep
        raise OAuthError("invalid_client_metadata", "Client metadata is not JSON") from None


async def _bounded_body(request: web.Request, limit: int, error: str) -> bytes:
    """The whole request body, or 413 as soon as it exceeds `limit` bytes."""
    if (request.content_length or 0) > limit:
        raise OAuthError(error, "Request body too large", 413)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise OAuthError(error, "Request body too large", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={**PAGE_HEADERS, "Location": location})


def _fail_closed(handler: PageHandler, *, page: bool = False) -> PageHandler:
    """`handler`, answering 503 with `Retry-After` when the state store is down: an OAuth
    JSON error (`temporarily_unavailable`) or, for pages, a page saying to try again. Nothing
    that needed the store is answered as if it had been checked."""

    async def guarded(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except StoreUnavailableError:
            if page:
                response = _page(
                    503, "Try again shortly", "<p>Signing in is unavailable for a moment.</p>"
                )
            else:
                response = _oauth_error(
                    OAuthError("temporarily_unavailable", "Try again shortly", 503)
                )
            response.headers["Retry-After"] = str(StoreUnavailableError.retry_after)
            return response

    return guarded


def _refused(event: str, error: OAuthError) -> web.Response:
    """Log why a request was refused (info: the client's own doing) and answer the error."""
    audit.info(event, error=error.error, reason=error.description[:MAX_REASON_CHARS])
    return _oauth_error(error)


def _error_page(event: str, description: str, status: int = 400) -> web.Response:
    """Log why a page request was refused (info) and show the "Cannot continue" page."""
    audit.info(event, reason=description[:MAX_REASON_CHARS])
    return _page(status, "Cannot continue", f"<p>{html.escape(description)}</p>")


def _oauth_error(error: OAuthError) -> web.Response:
    headers = dict(JSON_HEADERS)
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="oauth"'
    return web.json_response(error.body(), status=error.status, headers=headers)


# -- pages ------------------------------------------------------------------------------------

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}"
    "label,input,button{display:block;font-size:1rem;margin:.5rem 0}"
    "input{width:100%;padding:.4rem}button{padding:.5rem 1rem}"
    ".row{display:flex;gap:1rem}.error{color:#a00}"
)


def _page(status: int, title: str, body: str) -> web.Response:
    text = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )
    return web.Response(
        status=status, text=text, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS
    )


def _hidden(fields: Mapping[str, str]) -> str:
    return "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in fields.items()
    )


def _asks(described: Described) -> str:
    """ "<client> ... <server> (<route>)", escaped, for the pages' first line."""
    return (
        f"<strong>{html.escape(described.client_name)}</strong> wants to use the MCP server "
        f"<strong>{html.escape(described.resource_name)}</strong> "
        f"(<code>{html.escape(described.route)}</code>) on your behalf"
    )


def _sign_in_page(state: str, described: Described, *, failed: bool = False) -> web.Response:
    error = '<p class="error" role="alert">Wrong user name or password.</p>' if failed else ""
    body = (
        f"{error}<p>{_asks(described)}. Sign in to continue.</p>"
        '<form method="post" action="/oauth/sign-in">'
        f"{_hidden({'state': state})}"
        '<label for="username">User name</label>'
        '<input id="username" name="username" autocomplete="username" required autofocus>'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" '
        'autocomplete="current-password" required>'
        '<button type="submit">Sign in</button></form>'
    )
    return _page(401 if failed else 200, "Sign in", body)


def _consent_page(outcome: ConsentNeeded) -> web.Response:
    described = outcome.described
    scopes = "".join(
        f"<li><code>{html.escape(scope)}</code>"
        + (f": {html.escape(description)}" if description else "")
        + "</li>"
        for scope, description in outcome.scopes
    )
    offline = (
        "<p>It also asks to keep this access when you are away.</p>" if outcome.offline else ""
    )
    user = (
        f"<p>Signed in as <strong>{html.escape(outcome.user)}</strong> "
        '(<a href="/oauth/sign-out">sign out</a>).</p>'
        if outcome.user is not None
        else ""
    )
    body = (
        f"<p>{_asks(described)}.</p>"
        f"<p>This application {html.escape(described.client_origin)}.</p>"
        f"<p>After you decide, you go back to <strong>{html.escape(described.redirect_host)}"
        "</strong>.</p>"
        f"<p>It asks for:</p><ul>{scopes}</ul>{offline}{user}"
        '<form method="post" action="/oauth/consent">'
        f"{_hidden({'state': outcome.state})}"
        '<div class="row">'
        '<button type="submit" name="decision" value="approve">Approve</button>'
        '<button type="submit" name="decision" value="deny">Deny</button>'
        "</div></form>"
    )
    return _page(200, "Approve access", body)


# -- cookies ----------------------------------------------------------------------------------

FLOW_COOKIE = "mcp-gateway-flow"
SESSION_COOKIE = "mcp-gateway-session"
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_-]{43}$")


class Cookies:
    """The facade's two cookies, both HttpOnly, SameSite=Lax, Path=/ and random (256 bits; the
    store keeps only their digests):

    - the *flow* cookie binds each step of an authorization (consent, sign-in form, upstream
      callback) to the browser that started it;
    - the *session* cookie names the browser's sign-in session.

    With an https `public_url` they are `Secure` and named with the `__Host-` prefix (the
    browser then refuses them from any other host or path). A plain-http `public_url` (a
    loopback demo or test) gets the names without the prefix and no `Secure`, which the prefix
    requires and which browsers would not send back over http.
    """

    def __init__(self, issuer: str, settings: AuthorizationServerSettings) -> None:
        self.secure = urlsplit(issuer).scheme == "https"
        prefix = "__Host-" if self.secure else ""
        self.flow_name = prefix + FLOW_COOKIE
        self.session_name = prefix + SESSION_COOKIE
        self._flow_age = int(settings.login_lifetime)
        self._session_age = int(settings.sign_in_session.max_lifetime)

    def flow(self, request: web.Request) -> str:
        """This browser's flow cookie value, or a new one (set it with `set_flow`)."""
        value = request.cookies.get(self.flow_name, "")
        return value if _COOKIE_VALUE.fullmatch(value) else secrets.token_urlsafe(32)

    def flow_digest(self, request: web.Request) -> str:
        """The digest of this browser's flow cookie ("" without one: matches nothing)."""
        value = request.cookies.get(self.flow_name, "")
        return digest(value) if _COOKIE_VALUE.fullmatch(value) else ""

    def set_flow(self, response: web.StreamResponse, value: str) -> None:
        self._set(response, self.flow_name, value, self._flow_age)

    def set_session(self, response: web.StreamResponse, value: str) -> None:
        self._set(response, self.session_name, value, self._session_age)

    def clear_session(self, response: web.StreamResponse) -> None:
        self._set(response, self.session_name, "", 0)

    def _set(self, response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path="/", secure=self.secure, httponly=True,
            samesite="Lax",
        )  # fmt: skip
