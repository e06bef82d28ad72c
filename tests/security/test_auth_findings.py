"""Issue 14, the authentication and facade findings, each against real servers on loopback.

5. `/oauth/callback` exists only with federated login (it answered 500 in local-login mode).
6. The sign-in and consent forms are accepted only with the gateway's own `Origin`.
8. After a JWKS outage the gateway serves again within seconds of the keys coming back.
12a. An active introspection answer without `exp` is trusted only `ttl_without_exp` seconds.
12b. Federated login refuses a provider that does not advertise PKCE S256.
And malformed input on this side (tokens and JSON nested too deep, forms that are not UTF-8
form data, bad authorization requests) gets a 4xx and an info-level reason, never a 500.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web
from joserfc.jwk import RSAKey

from gateway.oauth.upstream import pkce_pair
from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.facade import ROUTE, facade_gateway, write_users
from tests.support.http_upstream import RecordingUpstream, recording_upstream
from tests.support.local_issuer import LocalIssuer
from tests.support.oauth_client import loopback_redirect_uri
from tests.support.processes import LOOPBACK, free_port
from tests.support.secrets import remember

PASSWORD = remember("issue 14: the facade's test password")
OTHER_APP = "https://app.example.com"
RPC = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
RECOVERY_BOUND = 5.0
"""Seconds within which the gateway must serve again once the keys are back (issue 14)."""


def log_records() -> list[dict[str, Any]]:
    return [json.loads(line) for line in gateway_log().splitlines() if line.startswith("{")]


def no_error_logged() -> None:
    errors = [r for r in log_records() if r.get("level") in {"error", "critical"}]
    assert errors == []


# -- the facade: a client, an authorization request, the pages ---------------------------------


async def ok(request: web.Request) -> web.StreamResponse:
    return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}})


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    async with recording_upstream(ok) as recorded:
        yield recorded


@pytest.fixture
async def facade(
    start_gateway_for: StartGateway, tmp_path: Path, upstream: RecordingUpstream
) -> Gateway:
    """A facade gateway with local users that also lets a second site (`OTHER_APP`) in."""
    users = write_users(tmp_path / "users.yaml", PASSWORD)
    return await facade_gateway(
        start_gateway_for, upstream.url, users, server={"allowed_origins": [OTHER_APP]}
    )


async def register(http: aiohttp.ClientSession, gw: Gateway, redirect_uri: str) -> str:
    async with http.post(
        gw.url("/oauth/register"),
        json={"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "none"},
    ) as answer:
        assert answer.status == 201, await answer.text()
        client_id: str = (await answer.json())["client_id"]
        return client_id


def authorization_query(gw: Gateway, client_id: str, redirect_uri: str) -> str:
    _, challenge = pkce_pair()
    return urlencode(
        {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
         "state": "s1", "code_challenge": challenge, "code_challenge_method": "S256",
         "resource": gw.url(ROUTE)}
    )  # fmt: skip


_STATE_FIELD = re.compile(r'<input type="hidden" name="state" value="([^"]*)">')


def form_state(page: str) -> str:
    found = _STATE_FIELD.search(page)
    assert found is not None, page
    return remember(found.group(1))


def browser() -> aiohttp.ClientSession:
    """A client that keeps cookies from 127.0.0.1 (aiohttp's default jar drops cookies of IP
    hosts), as a browser does: the facade binds each step to its flow cookie."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def consent_page(http: aiohttp.ClientSession, gw: Gateway) -> tuple[str, str]:
    """(the consent form's state, the client's redirect URI) of a fresh authorization: the
    consent page comes first, before any sign-in."""
    redirect_uri = loopback_redirect_uri()
    client_id = await register(http, gw, redirect_uri)
    query = authorization_query(gw, client_id, redirect_uri)
    async with http.get(gw.url("/oauth/authorize?" + query), allow_redirects=False) as page:
        assert page.status == 200
        text = await page.text()
        assert "Approve access" in text
        return form_state(text), redirect_uri


async def sign_in_page(http: aiohttp.ClientSession, gw: Gateway) -> tuple[str, str]:
    """(the sign-in form's state, the client's redirect URI): consent approved, the sign-in
    form is next."""
    state, redirect_uri = await consent_page(http, gw)
    async with http.post(
        gw.url("/oauth/consent"),
        data={"state": state, "decision": "approve"},
        headers={"Origin": gw.base},
        allow_redirects=False,
    ) as page:
        assert page.status == 200
        return form_state(await page.text()), redirect_uri


def origin_headers(origin: str | None) -> dict[str, str]:
    return {} if origin is None else {"Origin": origin}


# -- finding 5: /oauth/callback only with federated login --------------------------------------


@pytest.mark.parametrize(
    "query", ["", "?state=x&code=y", "?state=a&state=b", "?error=access_denied"]
)
async def test_the_callback_does_not_exist_with_local_login(facade: Gateway, query: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(facade.url("/oauth/callback" + query)) as callback:
            callback_status = callback.status
            callback_body = await callback.read()
        async with http.get(facade.url("/oauth/no-such-endpoint" + query)) as unknown:
            unknown_status = unknown.status
            unknown_body = await unknown.read()
    assert callback_status == 404
    assert (callback_status, callback_body) == (unknown_status, unknown_body)
    no_error_logged()


# -- finding 6: the forms need the gateway's own Origin ----------------------------------------


ORIGINS = [None, "null", OTHER_APP]
ORIGIN_IDS = ["no-origin", "null-origin", "other-allowed-origin"]


def refused_by_form_check(origin: str | None, path: str) -> None:
    """The form check refused it (a `null` Origin never gets past the edge, which logs it)."""
    refusals = [r for r in log_records() if r.get("event") == "form_post_refused"]
    if origin == "null":
        assert refusals == []
        return
    [refusal] = refusals
    assert (refusal["path"], refusal["level"]) == (path, "warning")
    assert refusal["reason"] == ("missing" if origin is None else "other")


@pytest.mark.parametrize("origin", ORIGINS, ids=ORIGIN_IDS)
async def test_a_sign_in_post_needs_the_gateways_own_origin(
    facade: Gateway, origin: str | None
) -> None:
    form = {"username": "alice", "password": PASSWORD}
    async with browser() as http:
        state, redirect_uri = await sign_in_page(http, facade)
        async with http.post(
            facade.url("/oauth/sign-in"),
            data=form | {"state": state},
            headers=origin_headers(origin),
            allow_redirects=False,
        ) as refused:
            assert refused.status == 403
            if origin != "null":  # refused by the form check, with a page
                assert refused.content_type == "text/html"
                assert "Cannot continue" in await refused.text()
        # The refused post spent nothing: from the gateway's own page the same form goes on.
        async with http.post(
            facade.url("/oauth/sign-in"),
            data=form | {"state": state},
            headers={"Origin": facade.base},
            allow_redirects=False,
        ) as accepted:
            assert accepted.status == 302  # approved before: straight back with a code
            location = accepted.headers["Location"]
    assert location.startswith(redirect_uri + "?")
    remember(parse_qs(urlsplit(location).query)["code"][0])
    refused_by_form_check(origin, "/oauth/sign-in")
    assert not [r for r in log_records() if r.get("event") == "sign_in_failed"]
    no_error_logged()


@pytest.mark.parametrize("origin", ORIGINS, ids=ORIGIN_IDS)
async def test_a_consent_post_needs_the_gateways_own_origin(
    facade: Gateway, origin: str | None
) -> None:
    async with browser() as http:
        consent_state, _ = await consent_page(http, facade)
        approve = {"state": consent_state, "decision": "approve"}
        async with http.post(
            facade.url("/oauth/consent"),
            data=approve,
            headers=origin_headers(origin),
            allow_redirects=False,
        ) as refused:
            assert refused.status == 403
            assert "Location" not in refused.headers
        async with http.post(
            facade.url("/oauth/consent"),
            data=approve,
            headers={"Origin": facade.base},
            allow_redirects=False,
        ) as approved:
            assert approved.status == 200  # approved: the sign-in form is next
            assert 'action="/oauth/sign-in"' in await approved.text()
    refused_by_form_check(origin, "/oauth/consent")
    no_error_logged()


# -- finding 8: JWKS outage and recovery -------------------------------------------------------


async def call(gw: Gateway, token: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gw.url("/files/mcp"), json=RPC, headers={"Authorization": f"Bearer {token}"}
        ) as answer,
    ):
        await answer.read()
        return answer.status


async def served_within(gw: Gateway, token: str, bound: float) -> int:
    """Poll until the gateway serves `token` or `bound` seconds pass; the last status."""
    deadline = time.monotonic() + bound
    while (status := await call(gw, token)) == 503 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return status


async def resource_gateway(
    start: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream, **settings: Any
) -> Gateway:
    """A gateway trusting `issuer`, with the default JWKS refetch cooldown (30 s)."""
    servers = settings.pop("authorization_servers", [issuer.auth_server()])
    return await start(
        {"name": "files", "route": "/files/mcp", "url": upstream.url, "scopes": ["mcp:tools"]},
        auth={"resource_server": {"authorization_servers": servers, **settings}},
    )


async def test_keys_that_come_back_are_used_within_seconds(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    await issuer.stop()
    gw = await resource_gateway(start_gateway_for, issuer, upstream)
    token = issuer.mint(issuer.claims(gw.url("/files/mcp")))
    for _ in range(3):  # fail closed while the keys are unreachable
        assert await call(gw, token) == 503
    assert upstream.requests == []

    await issuer.start()
    assert await served_within(gw, token, RECOVERY_BOUND) == 200
    assert len(upstream.requests) == 1


async def test_keys_that_expire_during_an_outage_are_refetched_within_seconds_of_its_end(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    gw = await resource_gateway(start_gateway_for, issuer, upstream, jwks_cache_ttl=0.05)
    resource = gw.url("/files/mcp")
    assert await call(gw, issuer.mint(issuer.claims(resource))) == 200  # keys cached, healthy

    await issuer.stop()
    issuer.key = RSAKey.generate_key(2048, parameters={"kid": "k2", "use": "sig"})
    rotated = issuer.mint(issuer.claims(resource))
    deadline = time.monotonic() + RECOVERY_BOUND
    while (status := await call(gw, rotated)) != 503 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # until the cached keys are stale and cannot be refetched
    assert status == 503

    await issuer.start()
    assert await served_within(gw, rotated, RECOVERY_BOUND) == 200
    assert len(upstream.requests) == 2


# -- finding 12a: introspection answers without exp --------------------------------------------


async def test_an_answer_without_exp_is_not_trusted_after_deactivation_with_ttl_0(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    introspection = issuer.introspection_config() | {"ttl_without_exp": 0}
    gw = await resource_gateway(
        start_gateway_for,
        issuer,
        upstream,
        authorization_servers=[issuer.auth_server(introspection=introspection)],
    )
    token = issuer.opaque(gw.url("/files/mcp"), exp=None)
    assert "exp" not in issuer.active_tokens[token]
    assert await call(gw, token) == 200
    del issuer.active_tokens[token]  # the authorization server deactivates it
    assert await call(gw, token) == 401
    assert issuer.requests.count("introspect") == 2
    assert len(upstream.requests) == 1


async def test_an_answer_without_exp_is_still_cached_briefly_by_default(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    gw = await resource_gateway(
        start_gateway_for,
        issuer,
        upstream,
        authorization_servers=[issuer.auth_server(introspection=issuer.introspection_config())],
    )
    token = issuer.opaque(gw.url("/files/mcp"), exp=None)
    assert await call(gw, token) == 200
    assert await call(gw, token) == 200  # within the default 5 s: no second introspection
    assert issuer.requests.count("introspect") == 1


# -- finding 12b: a provider that does not advertise PKCE S256 ---------------------------------


class DiscoveryOnly:
    """An "OpenID provider" on loopback that serves only its discovery document."""

    def __init__(self, methods: list[str] | None) -> None:
        self.port = free_port()
        self.issuer = f"http://{LOOPBACK}:{self.port}"
        self.methods = methods
        self.requests: list[str] = []
        self._runner: web.AppRunner | None = None

    async def _discovery(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        document: dict[str, Any] = {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/auth",
            "token_endpoint": self.issuer + "/token",
            "jwks_uri": self.issuer + "/jwks",
            "response_types_supported": ["code"],
        }
        if self.methods is not None:
            document["code_challenge_methods_supported"] = self.methods
        return web.json_response(document)

    async def __aenter__(self) -> DiscoveryOnly:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/.well-known/oauth-authorization-server", self._discovery)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def federated(
    start: StartGateway, provider: DiscoveryOnly, upstream: RecordingUpstream, **oidc: Any
) -> Gateway:
    login = {"oidc": {"issuer": provider.issuer, "client_id": "gateway", **oidc}}
    return await start(
        {"name": "files", "route": ROUTE, "url": upstream.url, "scopes": ["mcp:tools"]},
        auth={"authorization_server": {"login": login, "grants": [{"scopes": ["mcp:tools"]}]}},
    )


async def authorize_at(gw: Gateway) -> aiohttp.ClientResponse:
    """The answer to approving a fresh authorization (consent comes before the provider)."""
    async with browser() as http:
        state, _ = await consent_page(http, gw)
        async with http.post(
            gw.url("/oauth/consent"),
            data={"state": state, "decision": "approve"},
            headers={"Origin": gw.base},
            allow_redirects=False,
        ) as page:
            await page.read()
            return page


@pytest.mark.parametrize(
    "methods", [None, ["plain"], [], "S256"], ids=["absent", "plain-only", "empty", "not-a-list"]
)
async def test_a_provider_that_does_not_advertise_s256_is_refused(
    start_gateway_for: StartGateway, upstream: RecordingUpstream, methods: Any
) -> None:
    async with DiscoveryOnly(methods) as provider:
        gw = await federated(start_gateway_for, provider, upstream)
        page = await authorize_at(gw)
    assert page.status == 503
    assert "Location" not in page.headers  # nobody is sent to that provider
    assert provider.requests  # its discovery document was read
    [refusal] = [r for r in log_records() if r.get("event") == "upstream_provider_unusable"]
    assert refusal["level"] == "warning"
    assert "S256" in refusal["reason"]
    no_error_logged()


@pytest.mark.parametrize(
    ("methods", "allow"),
    [(["S256"], False), (["plain", "S256"], False), (None, True)],
    ids=["s256", "plain-and-s256", "unadvertised-but-allowed"],
)
async def test_a_provider_advertising_s256_or_vouched_for_gets_an_s256_challenge(
    start_gateway_for: StartGateway, upstream: RecordingUpstream, methods: Any, allow: bool
) -> None:
    async with DiscoveryOnly(methods) as provider:
        gw = await federated(start_gateway_for, provider, upstream, allow_unadvertised_pkce=allow)
        page = await authorize_at(gw)
    assert page.status == 302
    location = urlsplit(page.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == provider.issuer + "/auth"
    params = parse_qs(location.query)
    assert params["code_challenge_method"] == ["S256"]
    assert len(params["code_challenge"][0]) == 43
    warned = [r for r in log_records() if r.get("event") == "upstream_pkce_unadvertised_allowed"]
    assert len(warned) == (1 if allow else 0)


async def test_the_sign_in_form_does_not_exist_with_federated_login(
    start_gateway_for: StartGateway, upstream: RecordingUpstream
) -> None:
    async with DiscoveryOnly(["S256"]) as provider:
        gw = await federated(start_gateway_for, provider, upstream)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                gw.url("/oauth/sign-in"),
                data={"state": "x", "username": "alice", "password": "x"},
                headers={"Origin": gw.base},
            ) as answer,
        ):
            assert answer.status == 404
    no_error_logged()


# -- malformed input: a 4xx and a logged reason, never a 500 -----------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("part", ["header", "payload"])
async def test_a_token_nested_too_deep_to_parse_is_refused_with_401(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream, part: str
) -> None:
    gw = await resource_gateway(start_gateway_for, issuer, upstream)
    nested, plain = _b64(b"[" * 3000), _b64(b'{"alg":"RS256"}')
    segments = [nested, _b64(b"{}")] if part == "header" else [plain, nested]
    token = remember(".".join([*segments, _b64(b"signature")]))
    assert await call(gw, token) == 401
    assert upstream.requests == []
    no_error_logged()


FORM = "application/x-www-form-urlencoded"
BAD_BODIES = {
    "not-utf8": (FORM, b"grant_type=\xff"),
    "percent-escape-not-utf8": (FORM, b"grant_type=%ff"),
    "latin-1-charset": (FORM + "; charset=latin-1", b"grant_type=x"),
    "unknown-charset": (FORM + "; charset=no-such-charset", b"grant_type=x"),
    "too-many-fields": (FORM, b"a=1&" * 100),
}


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke"])
@pytest.mark.parametrize(("content_type", "body"), BAD_BODIES.values(), ids=list(BAD_BODIES))
async def test_a_form_that_is_not_utf8_form_data_is_a_bad_request(
    facade: Gateway, path: str, content_type: str, body: bytes
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(facade.url(path), data=body, headers={"Content-Type": content_type}) as answer,
    ):
        assert answer.status == 400
        assert (await answer.json())["error"] == "invalid_request"
    event = {"/oauth/token": "token_refused", "/oauth/revoke": "revocation_refused"}[path]
    [refusal] = [r for r in log_records() if r.get("event") == event]
    assert (refusal["level"], refusal["error"]) == ("info", "invalid_request")
    no_error_logged()


@pytest.mark.parametrize(
    "query",
    ["", "?client_id=nobody", "?client_id=a&client_id=b", "?client_id=%ff%00"],
    ids=["empty", "unknown-client", "repeated-client", "bad-encoding"],
)
async def test_a_bad_authorization_request_gets_a_page_and_a_logged_reason(
    facade: Gateway, query: str
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(facade.url("/oauth/authorize" + query), allow_redirects=False) as page,
    ):
        assert page.status == 400
        assert "Cannot continue" in await page.text()
    [refusal] = [r for r in log_records() if r.get("event") == "authorization_refused"]
    assert refusal["level"] == "info"
    assert "not registered" in refusal["reason"]
    no_error_logged()


async def test_a_chunked_form_is_read_whole_and_bounded(facade: Gateway) -> None:
    async def chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    async with aiohttp.ClientSession() as http:
        headers = {"Content-Type": FORM}
        small = [b"grant_type=nope", b"&client_id=", b"unknown"]  # no Content-Length
        async with http.post(facade.url("/oauth/token"), data=chunks(small), headers=headers) as a:
            assert a.status == 401  # read whole: the client_id in the last chunk was seen
            assert (await a.json())["error"] == "invalid_client"
        large = [b"a=" + b"x" * 8192] * 3
        async with http.post(facade.url("/oauth/token"), data=chunks(large), headers=headers) as a:
            assert a.status == 413
    no_error_logged()


async def test_a_registration_nested_too_deep_to_parse_is_a_bad_request(facade: Gateway) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            facade.url("/oauth/register"),
            data=b"[" * 5000,
            headers={"Content-Type": "application/json"},
        ) as answer,
    ):
        assert answer.status == 400
        assert (await answer.json())["error"] == "invalid_client_metadata"
    no_error_logged()
