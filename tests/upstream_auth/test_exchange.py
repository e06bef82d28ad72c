"""`upstream_auth: {kind: exchange}`: RFC 8693 token exchange, through a real gateway.

The caller's token comes from the local issuer the gateway trusts; the exchange happens at a
spec-checking token exchange server on loopback (`tests.support.exchange_server`), and the
upstream is a recording HTTP server or a real `mcp` SDK server that verifies tokens itself.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from gateway.oauth.signing import SigningKey
from gateway.upstream_auth.exchange import (
    DEFAULT_LIFETIME,
    Answer,
    Issued,
    Refused,
    Unavailable,
    exchange_form,
    parse_answer,
    reuse_until,
)
from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.exchange_server import ACCESS_TOKEN_TYPE, SERVERS_OWN_WORDS, ExchangeServer
from tests.support.http_upstream import RecordingUpstream
from tests.support.local_issuer import LocalIssuer
from tests.support.sdk_client import list_and_call
from tests.support.sdk_protected_server import sdk_protected_server
from tests.support.secrets import remember

CLIENT = "mcp-gateway"
SECRET = remember(secrets.token_urlsafe(24) + ":+/ %&=")
"""The gateway's client secret at the exchange server, with characters that RFC 6749 section
2.3.1's form-urlencoding before Basic must carry intact."""
AUDIENCE = "https://files.internal.example"
ROUTE = "/files/mcp"
POLICY = {"tools": {"read_file": ["files:read"]}}
CALL = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "read_file"}}


@pytest.fixture
async def exchange(issuer: LocalIssuer) -> AsyncIterator[ExchangeServer]:
    server = ExchangeServer(issuer)
    server.register(CLIENT, "client_secret_basic", secret=SECRET)
    await server.start()
    yield server
    if server.hold is not None:
        server.hold.set()  # let held requests finish, so stopping does not wait for them
    await server.stop()


def exchange_auth(server: ExchangeServer, **overrides: Any) -> dict[str, Any]:
    settings = {
        "kind": "exchange",
        "token_endpoint": server.token_endpoint,
        "audience": AUDIENCE,
        "client_id": CLIENT,
        "client_secret": SECRET,
        **overrides,
    }
    return {name: value for name, value in settings.items() if value is not None}


async def files_gateway(
    start: StartGateway, issuer: LocalIssuer, url: str, auth: dict[str, Any], **extra: Any
) -> Gateway:
    return await start(
        {
            "name": "files",
            "route": ROUTE,
            "url": url,
            "scopes": ["mcp:tools"],
            "policy": POLICY,
            "upstream_auth": auth,
        },
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
        **extra,
    )


@pytest.fixture
async def gw(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    exchange: ExchangeServer,
) -> Gateway:
    return await files_gateway(start_gateway_for, issuer, upstream.url, exchange_auth(exchange))


def caller_token(issuer: LocalIssuer, gw: Gateway, **claims: Any) -> str:
    return issuer.mint(issuer.claims(gw.url(ROUTE), **claims))


async def call(gw: Gateway, token: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url(ROUTE), json=CALL, headers=headers) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.json()


async def metric_lines(gw: Gateway) -> list[str]:
    async with aiohttp.ClientSession() as http, http.get(gw.url("/metrics")) as resp:
        text = await resp.text()
    return [line for line in text.splitlines() if "upstream_credentials_total{" in line]


def credential_metric(outcome: str, value: float) -> str:
    labels = f'kind="exchange",outcome="{outcome}",upstream="files"'
    return f"mcp_gateway_upstream_credentials_total{{{labels}}} {value}"


def logged(event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in gateway_log().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


async def until(condition: Callable[[], bool], seconds: float = 30) -> None:
    """Wait, polling, until `condition()` holds (or fail when `seconds` pass)."""
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


# -- acceptance -------------------------------------------------------------------------------


async def test_upstream_gets_the_exchanged_token_never_the_callers(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream, exchange: ExchangeServer
) -> None:
    token = caller_token(issuer, gw)
    first, _, _ = await call(gw, token)
    second, _, _ = await call(gw, token)
    assert (first, second) == (200, 200)
    [issued] = exchange.issued  # the second request reused the first exchange's token
    assert [r.headers.get("Authorization") for r in upstream.requests] == [f"Bearer {issued}"] * 2
    for request in upstream.requests:
        assert not any(token in value for _, value in request.header_list)
        assert token.encode() not in request.body
    claims = exchange.verify(issued)
    assert (claims["sub"], claims["aud"], claims["client_id"]) == ("alice", AUDIENCE, CLIENT)
    [asked] = exchange.exchanges
    assert (asked.method, asked.audience, asked.resource) == ("client_secret_basic", AUDIENCE, None)
    assert asked.scope == "files:read mcp:tools"  # the caller's scopes the route's policy knows
    metrics = await metric_lines(gw)
    assert credential_metric("issued", 1.0) in metrics
    assert credential_metric("cached", 1.0) in metrics
    [event] = logged("upstream_credential_exchanged")
    assert (event["upstream"], event["expires_in"]) == ("files", 300)


async def test_a_real_mcp_server_accepts_the_exchanged_token(
    start_gateway_for: StartGateway, issuer: LocalIssuer, exchange: ExchangeServer
) -> None:
    async with sdk_protected_server(exchange.issuer, json_response=True) as server:
        auth = exchange_auth(exchange, audience=None, resource=server.url, scopes=["files:read"])
        gw = await files_gateway(start_gateway_for, issuer, server.url, auth)
        token = caller_token(issuer, gw)
        outcome = await list_and_call(
            gw.url(ROUTE), "whoami", headers={"Authorization": f"Bearer {token}"}
        )
    assert outcome.call is not None
    assert not outcome.call.is_error
    assert outcome.call.text == f"alice {CLIENT} files:read"
    assert {e.resource for e in exchange.exchanges} == {server.url}


async def test_concurrent_first_requests_share_one_exchange(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    exchange: ExchangeServer,
) -> None:
    gw = await files_gateway(
        start_gateway_for,
        issuer,
        upstream.url,
        exchange_auth(exchange),
        sessions={"max_streams_per_principal": 128},  # one principal's 100 requests at once
    )
    token = caller_token(issuer, gw)
    exchange.hold = asyncio.Event()
    calls = [asyncio.create_task(call(gw, token)) for _ in range(100)]
    await asyncio.wait_for(exchange.received.wait(), 30)
    # Every other request is now waiting on the one exchange in flight; then it answers.
    await until(
        lambda: (
            len(logged("upstream_credential_exchange_joined")) == 99 or exchange.token_requests > 1
        )
    )
    assert exchange.token_requests == 1
    exchange.hold.set()
    statuses = [status for status, _, _ in await asyncio.gather(*calls)]
    assert statuses == [200] * 100
    assert exchange.token_requests == 1
    [issued] = exchange.issued
    assert {r.headers.get("Authorization") for r in upstream.requests} == {f"Bearer {issued}"}
    assert len(upstream.requests) == 100
    metrics = await metric_lines(gw)
    assert credential_metric("issued", 1.0) in metrics
    assert credential_metric("cached", 99.0) in metrics


async def test_concurrent_first_requests_share_one_refusal_and_it_is_not_kept(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream, exchange: ExchangeServer
) -> None:
    token = caller_token(issuer, gw)
    exchange.error = (400, "access_denied")
    exchange.hold = asyncio.Event()
    calls = [asyncio.create_task(call(gw, token)) for _ in range(10)]
    await asyncio.wait_for(exchange.received.wait(), 30)
    await until(
        lambda: (
            len(logged("upstream_credential_exchange_joined")) == 9 or exchange.token_requests > 1
        )
    )
    exchange.hold.set()
    answers = await asyncio.gather(*calls)
    assert [status for status, _, _ in answers] == [403] * 10
    assert [body["id"] for _, _, body in answers] == [7] * 10
    assert exchange.token_requests == 1
    assert credential_metric("refused", 10.0) in await metric_lines(gw)
    exchange.error = None
    status, _, _ = await call(gw, token)
    assert status == 200
    assert exchange.token_requests == 2
    assert len(upstream.requests) == 1


async def test_endpoint_down_is_503_and_the_gateway_recovers_when_it_is_back(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream, exchange: ExchangeServer
) -> None:
    token = caller_token(issuer, gw)
    await exchange.stop()
    status, headers, body = await call(gw, token)
    assert status == 503
    assert headers["Retry-After"] == "5"
    assert body["id"] == 7
    assert body["error"]["code"] == -31057
    assert body["error"]["message"] == "The upstream's credential is unavailable, retry later"
    assert upstream.requests == []
    [failed] = logged("upstream_credential_exchange_failed")
    assert failed["level"] == "warning"
    assert failed["reason"] == "ClientConnectorError"
    await exchange.start()
    status, _, _ = await call(gw, token)
    assert status == 200
    assert [r.headers.get("Authorization") for r in upstream.requests] == [
        f"Bearer {exchange.issued[0]}"
    ]
    metrics = await metric_lines(gw)
    assert credential_metric("unavailable", 1.0) in metrics
    assert credential_metric("issued", 1.0) in metrics


async def test_an_exchange_slower_than_the_timeout_is_503(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    exchange: ExchangeServer,
) -> None:
    auth = exchange_auth(exchange, timeout=0.2)
    gw = await files_gateway(start_gateway_for, issuer, upstream.url, auth)
    exchange.hold = asyncio.Event()  # never set: the server never answers
    status, headers, _ = await call(gw, caller_token(issuer, gw))
    assert (status, headers.get("Retry-After")) == (503, "5")
    assert [e["reason"] for e in logged("upstream_credential_exchange_failed")] == ["timeout"]
    assert upstream.requests == []
    exchange.hold.set()


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("access_denied", "denied this caller a token for the upstream"),
        ("invalid_target", "will not issue this caller a token for the upstream"),
        ("invalid_scope", "would not grant the scopes requested"),
        ("invalid_grant", "did not accept the caller's token"),
        ("unauthorized_client", "The gateway may not exchange this caller's token"),
        ("invalid_request", "refused the exchange request"),
    ],
)
async def test_a_refusal_is_403_in_the_gateways_own_words(
    gw: Gateway,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    exchange: ExchangeServer,
    error: str,
    message: str,
) -> None:
    exchange.error = (400, error)
    token = caller_token(issuer, gw)
    status, headers, body = await call(gw, token)
    assert status == 403
    assert "Retry-After" not in headers
    assert body["error"]["code"] == -31058
    assert message in body["error"]["message"]
    assert SERVERS_OWN_WORDS not in json.dumps(body)
    assert upstream.requests == []
    [refused] = logged("upstream_credential_exchange_refused")
    assert (refused["level"], refused["error"]) == ("info", error)
    # A refusal is not kept: once the server grants, the same caller gets through.
    exchange.error = None
    status, _, _ = await call(gw, token)
    assert status == 200
    assert exchange.token_requests == 2
    assert credential_metric("refused", 1.0) in await metric_lines(gw)


@pytest.mark.parametrize(
    "method",
    ["client_secret_basic", "client_secret_post", "private_key_jwt_es256", "private_key_jwt_rs256"],
)
async def test_each_client_authentication_method_is_accepted(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    exchange: ExchangeServer,
    method: str,
) -> None:
    if method.startswith("client_secret"):
        exchange.register("other-gateway", method, secret=SECRET)
        settings: dict[str, str | None] = {"client_auth": method}
    else:
        key = SigningKey.generate("ES256" if method.endswith("es256") else "RS256")
        pem = remember(key.to_pem())
        exchange.register("other-gateway", "private_key_jwt", public_key=key.key)
        settings = {"client_auth": "private_key_jwt", "client_secret": None, "private_key": pem}
    auth = exchange_auth(exchange, client_id="other-gateway", **settings)
    gw = await files_gateway(start_gateway_for, issuer, upstream.url, auth)
    status, _, _ = await call(gw, caller_token(issuer, gw))
    assert status == 200, exchange.rejections
    [asked] = exchange.exchanges
    assert asked.client_id == "other-gateway"
    assert asked.method == settings["client_auth"]


async def test_private_key_jwt_assertions_are_fresh_each_time(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    exchange: ExchangeServer,
) -> None:
    """The server refuses a reused `jti`: two exchanges need two assertions."""
    key = SigningKey.generate("ES256")
    exchange.register("other-gateway", "private_key_jwt", public_key=key.key)
    auth = exchange_auth(
        exchange,
        client_id="other-gateway",
        client_auth="private_key_jwt",
        client_secret=None,
        private_key=remember(key.to_pem()),
    )
    gw = await files_gateway(start_gateway_for, issuer, upstream.url, auth)
    for subject in ("alice", "bob"):
        status, _, _ = await call(gw, caller_token(issuer, gw, sub=subject))
        assert status == 200, exchange.rejections
    assert [e.subject for e in exchange.exchanges] == ["alice", "bob"]


@pytest.mark.parametrize(
    "client_auth", ["client_secret_basic", "client_secret_post", "private_key_jwt"]
)
async def test_wrong_client_credentials_are_503_and_warn_the_operator(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    exchange: ExchangeServer,
    client_auth: str,
) -> None:
    if client_auth == "private_key_jwt":
        registered = SigningKey.generate("ES256")
        exchange.register("other-gateway", client_auth, public_key=registered.key)
        unknown = remember(SigningKey.generate("ES256").to_pem())
        wrong: dict[str, str | None] = {"client_secret": None, "private_key": unknown}
        why = "assertion signature invalid"
    else:
        exchange.register("other-gateway", client_auth, secret=SECRET)
        wrong = {"client_secret": remember(secrets.token_urlsafe(24))}
        why = "wrong client secret"
    auth = exchange_auth(exchange, client_id="other-gateway", client_auth=client_auth, **wrong)
    gw = await files_gateway(start_gateway_for, issuer, upstream.url, auth)
    status, headers, body = await call(gw, caller_token(issuer, gw))
    assert (status, headers.get("Retry-After")) == (503, "5")
    assert body["error"]["code"] == -31057
    assert exchange.rejections == [why]
    [warning] = logged("upstream_credential_client_rejected")
    assert warning["level"] == "warning"
    assert (warning["client_id"], warning["client_auth"]) == ("other-gateway", client_auth)
    assert upstream.requests == []


async def test_the_cache_does_not_outlive_the_callers_token(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream, exchange: ExchangeServer
) -> None:
    exchange.expires_in = 3600  # the exchanged token would live an hour
    # Expired 5 s ago: still within the gateway's (and the server's) 30 s clock-skew leeway,
    # so it is accepted, but a token exchanged from it must not be reused.
    expiring = caller_token(issuer, gw, exp=int(time.time()) - 5)
    for _ in range(2):
        status, _, _ = await call(gw, expiring)
        assert status == 200
    assert exchange.token_requests == 2
    # The same caller with a token valid for minutes: the exchanged token is reused.
    fresh = caller_token(issuer, gw)
    for _ in range(2):
        status, _, _ = await call(gw, fresh)
        assert status == 200
    assert exchange.token_requests == 3
    assert [e["reused_for"] for e in logged("upstream_credential_exchanged")][:2] == [0, 0]


VALID = {
    "access_token": "eyJhbGciOiJub25lIn0.e30.sig-_~+/==",
    "issued_token_type": ACCESS_TOKEN_TYPE,
    "token_type": "bearer",
    "expires_in": 60,
}
"""An answer the gateway takes (the control); each malformed one below breaks it in one way."""


@pytest.mark.parametrize(
    ("changes", "removed"),
    [
        pytest.param({}, ("access_token",), id="no-token"),
        pytest.param({"access_token": ""}, (), id="empty-token"),
        pytest.param({"access_token": 12345}, (), id="number-token"),
        pytest.param({"access_token": "a b"}, (), id="space-in-token"),
        pytest.param({"access_token": "a\r\nX-Admin: 1"}, (), id="crlf-in-token"),
        pytest.param({"access_token": "a=b"}, (), id="padding-inside-token"),
        pytest.param({}, ("issued_token_type",), id="no-issued-token-type"),
        pytest.param({"issued_token_type": ""}, (), id="empty-issued-token-type"),
        pytest.param({}, ("token_type",), id="no-token-type"),
        pytest.param({"token_type": "DPoP"}, (), id="dpop-token-type"),
        pytest.param({"expires_in": "3600"}, (), id="expires-in-text"),
        pytest.param({"expires_in": 0}, (), id="expires-in-zero"),
        pytest.param({"expires_in": -5}, (), id="expires-in-negative"),
        pytest.param({"expires_in": True}, (), id="expires-in-bool"),
        pytest.param({"expires_in": 3.5}, (), id="expires-in-float"),
    ],
)
async def test_a_malformed_answer_is_503(
    gw: Gateway,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    exchange: ExchangeServer,
    changes: dict[str, Any],
    removed: tuple[str, ...],
) -> None:
    answer = {k: v for k, v in (VALID | changes).items() if k not in removed}
    exchange.raw_answer = (200, answer)
    status, headers, body = await call(gw, caller_token(issuer, gw))
    assert (status, headers.get("Retry-After")) == (503, "5")
    assert body["error"]["code"] == -31057
    assert upstream.requests == []
    assert credential_metric("unavailable", 1.0) in await metric_lines(gw)
    [failed] = logged("upstream_credential_exchange_failed")
    assert failed["reason"] == "malformed answer"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'["abc"]', id="array"),
        pytest.param(b'{"access_token": "' + b"a" * 70_000 + b'"}', id="too-large"),
    ],
)
async def test_an_answer_that_is_no_json_object_is_503(
    gw: Gateway,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    exchange: ExchangeServer,
    raw: bytes,
) -> None:
    exchange.raw_answer = (200, raw)
    status, _, _ = await call(gw, caller_token(issuer, gw))
    assert status == 503
    assert upstream.requests == []


async def test_a_well_formed_answer_is_taken_as_is(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream, exchange: ExchangeServer
) -> None:
    """The control of the malformed answers: the same answer, unbroken, passes."""
    exchange.raw_answer = (200, VALID)
    status, _, _ = await call(gw, caller_token(issuer, gw))
    assert status == 200
    assert [r.headers.get("Authorization") for r in upstream.requests] == [
        f"Bearer {VALID['access_token']}"
    ]


# -- the pure parts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "answer", "expected"),
    [
        pytest.param(
            200, VALID, Issued(str(VALID["access_token"]), ACCESS_TOKEN_TYPE, 60), id="ok"
        ),
        pytest.param(
            200,
            {**VALID, "token_type": "N_A", "expires_in": None},
            Issued(str(VALID["access_token"]), ACCESS_TOKEN_TYPE, None),
            id="n-a-without-expiry",
        ),
        pytest.param(400, {"error": "access_denied"}, Refused("access_denied"), id="refused"),
        pytest.param(
            400,
            {"error": "invalid_client"},
            Unavailable("invalid_client", 400, client_rejected=True),
            id="invalid-client-400",
        ),
        pytest.param(
            401,
            {"error": "invalid_client"},
            Unavailable("invalid_client", 401, client_rejected=True),
            id="invalid-client-401",
        ),
        pytest.param(
            401, None, Unavailable("invalid_client", 401, client_rejected=True), id="bare-401"
        ),
        pytest.param(
            400,
            {"error": "unsupported_grant_type"},
            Unavailable("unsupported_grant_type", 400),
            id="no-token-exchange-there",
        ),
        pytest.param(400, {"error": "x\r\ny"}, Unavailable("other", 400), id="unknown-error"),
        pytest.param(400, {"error": 5}, Unavailable("unexpected status", 400), id="error-number"),
        pytest.param(400, None, Unavailable("unexpected status", 400), id="400-without-body"),
        pytest.param(
            403, {"error": "access_denied"}, Unavailable("unexpected status", 403), id="403"
        ),
        pytest.param(
            500, {"error": "server_error"}, Unavailable("unexpected status", 500), id="500"
        ),
        pytest.param(302, None, Unavailable("unexpected status", 302), id="redirect"),
    ],
)
def test_parse_answer(status: int, answer: Any, expected: Answer) -> None:
    body = (
        b""
        if answer is None
        else json.dumps({k: v for k, v in answer.items() if v is not None}).encode()
    )
    assert parse_answer(status, body) == expected


def test_parse_answer_refuses_an_answer_too_large() -> None:
    assert parse_answer(200, None) == Unavailable("answer too large", 200)


def test_exchange_form_asks_for_an_access_token_and_omits_an_empty_scope() -> None:
    form = exchange_form("subject", audience="a", resource=None, scopes=frozenset())
    assert form == {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": "subject",
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "requested_token_type": ACCESS_TOKEN_TYPE,
        "audience": "a",
    }
    both = exchange_form("s", audience="a", resource="https://r", scopes=frozenset({"b", "a"}))
    assert (both["resource"], both["scope"]) == ("https://r", "a b")


@pytest.mark.parametrize(
    ("expires_in", "caller_left", "expected"),
    [
        pytest.param(3600, 10_000, 3570, id="margin-30s"),
        pytest.param(50, 10_000, 40, id="short-token-fifth-off"),
        pytest.param(None, 10_000, DEFAULT_LIFETIME, id="no-expires-in"),
        pytest.param(3600, 100, 100, id="caller-expires-first"),
        pytest.param(3600, -5, -5, id="caller-expired"),
    ],
)
def test_reuse_until(expires_in: int | None, caller_left: float, expected: float) -> None:
    issued = Issued("t", ACCESS_TOKEN_TYPE, expires_in)
    assert reuse_until(issued, now=1000, caller_expires_at=1000 + caller_left) == 1000 + expected
