"""Headless OAuth 2.1 for tests: the official mcp 2.x client's OAuth, and a bare PKCE flow.

`oauth_list_and_call` runs the SDK's own `OAuthClientProvider` against a protected MCP endpoint
(the gateway, or any RFC 9728 resource server): on a 401 the SDK reads ``resource_metadata``
from ``WWW-Authenticate``, fetches the protected resource metadata, discovers the authorization
server named there, registers dynamically, and sends the user to the authorization URL. Our
redirect handler plays the browser: it GETs that URL with redirects off and follows the
``Location`` chain itself, only ever to ``http://127.0.0.1`` URLs, until it reaches the
client's ``redirect_uri``; the callback handler hands ``code``, ``state`` and ``iss`` back as an
`AuthorizationCodeResult`, and the SDK checks ``state`` and ``iss`` (RFC 9207) itself.

`authorize` / `authorize_token` do the same authorization-code flow with PKCE (RFC 7636) and
resource indicators (RFC 8707) straight against the provider, with no MCP involved, for tests
that need a token bound to an arbitrary resource. Both log in as the provider's default user
unless given ``user`` (sent as ``login_hint``, which the test provider honours).
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import httpx2
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.client import ConnectMode
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from pydantic import AnyUrl

from .processes import LOOPBACK, free_port
from .sdk_client import DEFAULT_TIMEOUT, SessionOutcome, ToolOutcome, connect

MAX_REDIRECTS = 10
_HTTP_TIMEOUT = 10.0


class AuthorizationError(RuntimeError):
    """The browser leg of an authorization-code flow did not end with a code.

    ``error`` / ``error_description`` are the authorization server's (RFC 6749 §4.1.2.1) when it
    redirected back with an error; otherwise ``error`` is ``None``.
    """

    def __init__(
        self, message: str, *, error: str | None = None, error_description: str | None = None
    ) -> None:
        super().__init__(message)
        self.error = error
        self.error_description = error_description


@dataclass(frozen=True)
class HttpExchange:
    """One HTTP request a client made and the status it got."""

    method: str
    url: str
    status: int


@dataclass
class OAuthRecord:
    """What the SDK's OAuth flow did and obtained during `oauth_list_and_call`."""

    access_token: str | None = None
    refresh_token: str | None = None
    scope: str | None = None
    client_id: str | None = None
    issuer: str | None = None
    """The authorization server issuer the SDK used (from its discovered metadata)."""
    authorization_urls: list[str] = field(default_factory=list)
    """Each authorization request URL the SDK sent the "user" to, in order."""
    exchanges: list[HttpExchange] = field(default_factory=list)
    """Every request, in order: the MCP client's own (MCP, discovery, registration, token)
    and the browser leg's (authorization endpoint and the redirects after it)."""

    @property
    def requested_urls(self) -> list[str]:
        return [exchange.url for exchange in self.exchanges]


class InMemoryTokenStorage:
    """A `mcp.client.auth.TokenStorage` in memory; pass one in again to reuse its tokens."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


# -- the browser leg --------------------------------------------------------------------------


def _is_loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname == LOOPBACK


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _same_endpoint(url: str, redirect_uri: str) -> bool:
    a, b = urlsplit(url), urlsplit(redirect_uri)
    return (a.scheme, a.netloc, a.path) == (b.scheme, b.netloc, b.path)


def _with_params(url: str, extra: Mapping[str, str]) -> str:
    if not extra:
        return url
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(extra)}" if parts.query else urlencode(extra)
    return urlunsplit(parts._replace(query=query))


@dataclass
class Browser:
    """Cookies kept across authorizations, as one browser keeps them (the gateway's sign-in
    session, the provider's). Without one, every flow starts with no cookies."""

    jar: CookieJar = field(default_factory=CookieJar)

    def cookie(self, name: str) -> str | None:
        """The value of the cookie `name`, if the browser holds one."""
        return next((c.value for c in self.jar if c.name == name), None)


@dataclass(frozen=True)
class SignIn:
    """What the "user" types on the gateway's own sign-in and consent pages."""

    username: str
    password: str
    approve: bool = True


_FORM = re.compile(r'<form method="post" action="([^"]+)">(.*?)</form>', re.S)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def _form_answer(page: str, sign_in: SignIn) -> tuple[str, dict[str, str]] | None:
    """The form on one of the gateway's pages, filled in as `sign_in` says."""
    found = _FORM.search(page)
    if found is None:
        return None
    action, inner = found.groups()
    fields = {name: html.unescape(value) for name, value in _HIDDEN.findall(inner)}
    if 'name="password"' in inner:
        fields |= {"username": sign_in.username, "password": sign_in.password}
    if 'name="decision"' in inner:
        fields["decision"] = "approve" if sign_in.approve else "deny"
    return action, fields


async def follow_authorization(
    authorization_url: str,
    redirect_uri: str,
    *,
    exchanges: list[HttpExchange] | None = None,
    sign_in: SignIn | None = None,
    rewrite: Callable[[str], str] | None = None,
    origin: str | None = None,
    browser: Browser | None = None,
) -> AuthorizationCodeResult:
    """Play the user agent: GET ``authorization_url`` and follow redirects to ``redirect_uri``.

    Only ``http://127.0.0.1`` URLs are followed; the ``redirect_uri`` itself is never requested.
    Cookies are kept for the one flow (the gateway's flow cookie, the provider's interaction
    and session cookies) and then dropped, so every call logs in afresh; unless a ``browser``
    is given, whose cookies are used and kept. Each request is appended to ``exchanges``. With
    ``sign_in``, the gateway's own sign-in and consent forms are filled in and submitted.
    ``rewrite`` may change each redirect target before it is followed (an attacker's tampering).
    Like a browser, each form POST carries ``Origin``: that of the page holding the form, or
    ``origin`` if given (a page served through a load balancer under another origin).

    Raises:
        AuthorizationError: the server answered other than with a redirect (or a form it could
            fill in), redirected off loopback, redirected too often, or sent the user back with
            ``error=`` or no code.
    """
    url, form, form_origin = authorization_url, None, ""
    jar = browser.jar if browser is not None else CookieJar()
    async with httpx2.AsyncClient(
        timeout=_HTTP_TIMEOUT, follow_redirects=False, trust_env=False, cookies=jar
    ) as agent:
        for _ in range(MAX_REDIRECTS):
            if not _is_loopback_http(url):
                raise AuthorizationError(f"refusing to follow a redirect off loopback: {url}")
            method = "GET" if form is None else "POST"
            headers = {} if form is None else {"Origin": form_origin}
            response = await agent.request(method, url, data=form, headers=headers)
            if exchanges is not None:
                exchanges.append(HttpExchange(method, url, response.status_code))
            location = response.headers.get("location")
            if response.is_redirect and location is not None:
                url, form = urljoin(url, location), None
                if rewrite is not None:
                    url = rewrite(url)
                if _same_endpoint(url, redirect_uri):
                    return _authorization_response(url)
                continue
            fillable = sign_in is not None and response.status_code == 200
            answer = _form_answer(response.text, sign_in) if sign_in and fillable else None
            if answer is None:
                raise AuthorizationError(
                    f"{method} {url} answered {response.status_code}, not a redirect: "
                    f"{response.text[:500]}"
                )
            form_origin = origin or _origin(url)
            url, form = urljoin(url, answer[0]), answer[1]
    raise AuthorizationError(f"more than {MAX_REDIRECTS} redirects from {authorization_url}")


def _authorization_response(url: str) -> AuthorizationCodeResult:
    """The RFC 6749 §4.1.2 parameters of the redirect back to the client."""
    params = {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
    if "error" in params:
        raise AuthorizationError(
            f"authorization failed: {params['error']}: {params.get('error_description', '')}",
            error=params["error"],
            error_description=params.get("error_description"),
        )
    code = params.get("code")
    if not code:
        raise AuthorizationError(f"redirect back without a code: {url}")
    return AuthorizationCodeResult(code=code, state=params.get("state"), iss=params.get("iss"))


def loopback_redirect_uri() -> str:
    """A ``http://127.0.0.1:<port>/callback`` redirect URI on a port nothing listens on."""
    return f"http://{LOOPBACK}:{free_port()}/callback"


# -- the mcp SDK client ------------------------------------------------------------------------


class _HeadlessBrowser:
    """The SDK's ``redirect_handler`` and ``callback_handler`` for one OAuth client."""

    def __init__(
        self,
        redirect_uri: str,
        record: OAuthRecord,
        extra: Mapping[str, str],
        sign_in: SignIn | None = None,
        browser: Browser | None = None,
    ) -> None:
        self.redirect_uri = redirect_uri
        self.record = record
        self.extra = dict(extra)
        self.sign_in = sign_in
        self.browser = browser
        self._result: AuthorizationCodeResult | None = None

    async def redirect(self, authorization_url: str) -> None:
        self.record.authorization_urls.append(authorization_url)
        url = _with_params(authorization_url, self.extra)
        self._result = await follow_authorization(
            url,
            self.redirect_uri,
            exchanges=self.record.exchanges,
            sign_in=self.sign_in,
            browser=self.browser,
        )

    async def callback(self) -> AuthorizationCodeResult:
        result, self._result = self._result, None
        if result is None:
            raise AuthorizationError("callback handler called before the redirect handler")
        return result


async def oauth_list_and_call(
    url: str,
    tool: str | None = None,
    arguments: dict[str, Any] | None = None,
    *,
    scope: str | None = None,
    user: str | None = None,
    storage: InMemoryTokenStorage | None = None,
    record: OAuthRecord | None = None,
    mode: ConnectMode = "auto",
    timeout: float = DEFAULT_TIMEOUT,
    sign_in: SignIn | None = None,
    browser: Browser | None = None,
    extra: Mapping[str, str] | None = None,
) -> tuple[SessionOutcome, OAuthRecord]:
    """Connect to the protected MCP endpoint ``url`` with the SDK's OAuth, list tools, call one.

    The client registers as a public native client (``token_endpoint_auth_method: none``,
    grants ``authorization_code`` and ``refresh_token``, redirect URI on an unused loopback
    port). Registered ``scope`` is ``scope`` if given, else absent; note the SDK overwrites it
    with the scope it selects (``WWW-Authenticate`` scope, else the PRM's ``scopes_supported``,
    else the authorization server's, plus ``offline_access``) before it registers. ``user`` is
    sent as ``login_hint``; ``extra`` parameters (e.g. ``prompt``) are added to every
    authorization request. Pass a ``storage`` to reuse a registration and tokens across calls,
    a ``browser`` to keep cookies (a sign-in session) across them, and a ``record`` of your
    own to inspect what happened when the call raises.
    """
    record = OAuthRecord() if record is None else record
    storage = InMemoryTokenStorage() if storage is None else storage
    registered = storage.client_info
    # A registration kept in `storage` is reused by the SDK, and with it its redirect URI.
    redirect_uri = (
        str(registered.redirect_uris[0])
        if registered is not None and registered.redirect_uris
        else loopback_redirect_uri()
    )
    params = dict(extra or {}) | ({"login_hint": user} if user else {})
    headless = _HeadlessBrowser(redirect_uri, record, params, sign_in, browser)
    provider = OAuthClientProvider(
        url,
        client_metadata=OAuthClientMetadata(
            client_name="mcp-auth-gateway tests",
            redirect_uris=[AnyUrl(redirect_uri)],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
            scope=scope,
        ),
        storage=storage,
        redirect_handler=headless.redirect,
        callback_handler=headless.callback,
    )

    async def log_response(response: httpx2.Response) -> None:
        request = response.request
        record.exchanges.append(
            HttpExchange(request.method, str(request.url), response.status_code)
        )

    try:
        async with (
            httpx2.AsyncClient(
                auth=provider,
                # The SDK's defaults (see create_mcp_http_client): long reads for SSE streams.
                timeout=httpx2.Timeout(30.0, read=300.0),
                event_hooks={"response": [log_response]},
                trust_env=False,
            ) as http,
            connect(url, http_client=http, mode=mode, timeout=timeout) as client,
        ):
            listing = await client.list_tools()
            call = None
            if tool is not None:
                call = ToolOutcome.from_result(await client.call_tool(tool, arguments or {}))
            server_info = client.server_info
            outcome = SessionOutcome(
                protocol_version=client.protocol_version,
                server_name=server_info.name if server_info is not None else None,
                tools=[t.name for t in listing.tools],
                call=call,
            )
    finally:
        _fill_record(record, provider, storage)
    return outcome, record


def _fill_record(
    record: OAuthRecord, provider: OAuthClientProvider, storage: InMemoryTokenStorage
) -> None:
    if storage.tokens is not None:
        record.access_token = storage.tokens.access_token
        record.refresh_token = storage.tokens.refresh_token
        record.scope = storage.tokens.scope
    if storage.client_info is not None:
        record.client_id = storage.client_info.client_id
    metadata = provider.context.oauth_metadata
    if metadata is not None:
        record.issuer = str(metadata.issuer)


# -- a bare authorization-code flow ------------------------------------------------------------


@dataclass(frozen=True)
class TokenGrant:
    """A token response (RFC 6749 §5.1) plus the client that obtained it."""

    access_token: str
    client_id: str
    token_type: str
    expires_in: int | None
    scope: str | None
    refresh_token: str | None
    redirect_uri: str


def _pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), RFC 7636 §4.1-4.2."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


async def _json(response: httpx2.Response, what: str) -> dict[str, Any]:
    if response.status_code not in (200, 201):
        raise RuntimeError(f"{what} failed ({response.status_code}): {response.text}")
    body: dict[str, Any] = response.json()
    return body


async def discover(issuer: str) -> dict[str, Any]:
    """The provider's OpenID discovery document (``/.well-known/openid-configuration``)."""
    async with httpx2.AsyncClient(timeout=_HTTP_TIMEOUT, trust_env=False) as http:
        response = await http.get(f"{issuer}/.well-known/openid-configuration")
    return await _json(response, "discovery")


async def register_public_client(
    issuer: str, redirect_uri: str, *, scope: str | None = None
) -> str:
    """Register a public client (RFC 7591) with refresh-token grant; return its ``client_id``.

    Without ``scope`` the registration sets no scope ceiling, so the client may ask for any
    scope the provider supports later.
    """
    metadata = await discover(issuer)
    body: dict[str, Any] = {
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "native",
        "client_name": "mcp-auth-gateway tests (direct)",
    }
    if scope is not None:
        body["scope"] = scope
    async with httpx2.AsyncClient(timeout=_HTTP_TIMEOUT, trust_env=False) as http:
        response = await http.post(metadata["registration_endpoint"], json=body)
    client_id: str = (await _json(response, "registration"))["client_id"]
    return client_id


def _token_grant(body: Mapping[str, Any], client_id: str, redirect_uri: str) -> TokenGrant:
    return TokenGrant(
        access_token=body["access_token"],
        client_id=client_id,
        token_type=body["token_type"],
        expires_in=body.get("expires_in"),
        scope=body.get("scope"),
        refresh_token=body.get("refresh_token"),
        redirect_uri=redirect_uri,
    )


async def authorize(
    issuer: str,
    resource: str,
    scope: str | None = None,
    *,
    user: str | None = None,
    client_id: str | None = None,
    redirect_uri: str | None = None,
    ttl: int | None = None,
) -> TokenGrant:
    """Authorization-code flow with PKCE and ``resource`` against the provider at ``issuer``.

    Registers a fresh public client unless ``client_id`` (with its ``redirect_uri``) is given.
    ``scope`` is sent as is (the test provider gives a request without one its default scope);
    ``offline_access`` in it adds ``prompt=consent``, without which OIDC drops it. ``ttl``
    shortens the access token's lifetime (the test provider's non-standard ``ttl`` field).
    """
    if client_id is None:
        redirect_uri = redirect_uri or loopback_redirect_uri()
        client_id = await register_public_client(issuer, redirect_uri)
    elif redirect_uri is None:
        raise ValueError("pass redirect_uri with client_id")
    metadata = await discover(issuer)
    verifier, challenge = _pkce_pair()
    state = secrets.token_urlsafe(16)
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": resource,
    }
    if scope is not None:
        params["scope"] = scope
        if "offline_access" in scope.split():
            params["prompt"] = "consent"
    if user is not None:
        params["login_hint"] = user
    result = await follow_authorization(
        f"{metadata['authorization_endpoint']}?{urlencode(params)}", redirect_uri
    )
    if result.state != state:
        raise AuthorizationError(f"state mismatch: {result.state!r} != {state!r}")
    if result.iss != metadata["issuer"]:
        raise AuthorizationError(f"iss mismatch: {result.iss!r} != {metadata['issuer']!r}")
    form = {
        "grant_type": "authorization_code",
        "code": result.code,
        "redirect_uri": redirect_uri,
        "client_id": client_id,
        "code_verifier": verifier,
        "resource": resource,
    }
    if ttl is not None:
        form["ttl"] = str(ttl)
    async with httpx2.AsyncClient(timeout=_HTTP_TIMEOUT, trust_env=False) as http:
        response = await http.post(metadata["token_endpoint"], data=form)
    return _token_grant(await _json(response, "token request"), client_id, redirect_uri)


async def authorize_token(
    issuer: str,
    resource: str,
    scope: str | None = None,
    *,
    user: str | None = None,
    ttl: int | None = None,
) -> str:
    """A JWT access token bound to ``resource`` (``aud``), from `authorize`."""
    grant = await authorize(issuer, resource, scope, user=user, ttl=ttl)
    return grant.access_token


async def refresh(issuer: str, grant: TokenGrant, *, resource: str | None = None) -> TokenGrant:
    """Exchange ``grant``'s refresh token (RFC 6749 §6); ``resource`` defaults to the granted one.

    The provider rotates refresh tokens of public clients: use the returned grant's next time.
    """
    if grant.refresh_token is None:
        raise ValueError("the grant has no refresh token (ask for offline_access)")
    metadata = await discover(issuer)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": grant.refresh_token,
        "client_id": grant.client_id,
    }
    if resource is not None:
        form["resource"] = resource
    async with httpx2.AsyncClient(timeout=_HTTP_TIMEOUT, trust_env=False) as http:
        response = await http.post(metadata["token_endpoint"], data=form)
    return _token_grant(await _json(response, "refresh"), grant.client_id, grant.redirect_uri)
