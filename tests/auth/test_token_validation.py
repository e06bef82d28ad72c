"""Bearer-token validation at the gateway, against a real authorization server on loopback
(RFC 8414 metadata, JWKS, RFC 7662 introspection) and tokens signed with real keys."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from joserfc.jwk import RSAKey

from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.http_upstream import RecordingUpstream, recording_upstream
from tests.support.local_issuer import LocalIssuer
from tests.support.secrets import remember

RPC = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


async def ok(request: web.Request) -> web.StreamResponse:
    return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}})


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    async with recording_upstream(ok) as recorded:
        yield recorded


GatewayFor = Callable[..., Awaitable[Gateway]]


@pytest.fixture
def gateway_for(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> GatewayFor:
    async def start(**resource_server: Any) -> Gateway:
        servers = resource_server.pop("authorization_servers", [issuer.auth_server()])
        return await start_gateway_for(
            {"name": "files", "route": "/files/mcp", "url": upstream.url, "scopes": ["mcp:tools"]},
            auth={"resource_server": {"authorization_servers": servers, **resource_server}},
        )

    return start


async def call(gw: Gateway, token: str | None = None, **kwargs: Any) -> tuple[int, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    headers |= kwargs.pop("headers", {})
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url(kwargs.pop("path", "/files/mcp")), json=RPC, headers=headers) as resp,
    ):
        await resp.read()
        return resp.status, dict(resp.headers)


def challenge_params(header: str) -> dict[str, str]:
    assert header.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', header))


async def test_protected_resource_metadata(gateway_for: GatewayFor, issuer: LocalIssuer) -> None:
    gw = await gateway_for()
    async with (
        aiohttp.ClientSession() as http,
        http.get(gw.url("/.well-known/oauth-protected-resource/files/mcp")) as resp,
    ):
        assert resp.status == 200
        document = await resp.json()
    assert document == {
        "resource": gw.url("/files/mcp"),
        "authorization_servers": [issuer.issuer],
        "scopes_supported": ["mcp:tools"],
        "bearer_methods_supported": ["header"],
        "resource_name": "files",
    }


async def test_valid_token_reaches_upstream_without_its_credentials(
    gateway_for: GatewayFor, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    gw = await gateway_for()
    token = issuer.mint(issuer.claims(gw.url("/files/mcp")))
    status, _ = await call(gw, token)
    assert status == 200
    [seen] = upstream.requests
    assert "Authorization" not in seen.headers
    [line] = [
        json.loads(entry)
        for entry in gateway_log().splitlines()
        if '"request_completed"' in entry and "/files/mcp" in entry
    ]
    assert (line["sub"], line["client_id"], line["status"]) == ("alice", "client-1", 200)


async def test_missing_token_gets_a_challenge_pointing_at_the_metadata(
    gateway_for: GatewayFor, upstream: RecordingUpstream
) -> None:
    gw = await gateway_for()
    for headers in ({}, {"Authorization": "Basic YWxpY2U6c2VjcmV0"}):
        status, response_headers = await call(gw, headers=headers)
        assert status == 401
        assert challenge_params(response_headers["WWW-Authenticate"]) == {
            "resource_metadata": gw.url("/.well-known/oauth-protected-resource/files/mcp"),
            "scope": "mcp:tools",
        }
    assert upstream.requests == []


async def test_token_in_query_string_is_not_accepted(
    gateway_for: GatewayFor, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    gw = await gateway_for()
    token = issuer.mint(issuer.claims(gw.url("/files/mcp")))
    status, _ = await call(gw, path=f"/files/mcp?access_token={token}")
    assert status == 401
    assert upstream.requests == []


async def test_duplicate_authorization_headers_are_a_bad_request(
    gateway_for: GatewayFor, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    gw = await gateway_for()
    token = issuer.mint(issuer.claims(gw.url("/files/mcp")))
    async with aiohttp.ClientSession() as http:
        headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
        async with http.post(gw.url("/files/mcp"), json=RPC, headers=headers) as resp:
            assert resp.status == 400
            assert 'error="invalid_request"' in resp.headers["WWW-Authenticate"]
    assert upstream.requests == []


ATTACKER = RSAKey.generate_key(2048, parameters={"kid": "k1"})


def bad_tokens(issuer: LocalIssuer, resource: str) -> dict[str, str]:
    claims = issuer.claims
    now = int(time.time())
    valid = issuer.mint(claims(resource))
    header, _, signature = valid.split(".")
    tampered_claims = json.dumps(claims(resource, sub="admin")).encode()
    tampered = ".".join(
        [header, base64.urlsafe_b64encode(tampered_claims).rstrip(b"=").decode(), signature]
    )
    return {
        "alg-none": issuer.mint(claims(resource), header={"alg": "none"}),
        "hs256-with-public-key": issuer.mint(
            claims(resource),
            header={"alg": "HS256"},
            hmac_secret=issuer.key.as_pem(private=False),
        ),
        "wrong-issuer": issuer.mint(claims(resource, iss="https://evil.example")),
        "issuer-not-a-string": issuer.mint(claims(resource, iss=[issuer.issuer])),
        "missing-audience": issuer.mint(claims(resource, aud=None)),
        "wrong-audience": issuer.mint(claims(resource, aud="http://127.0.0.1:1/other/mcp")),
        "audience-trailing-slash": issuer.mint(claims(resource, aud=resource + "/")),
        "audience-letter-case": issuer.mint(claims(resource, aud=resource.upper())),
        "expired": issuer.mint(claims(resource, iat=now - 600, exp=now - 300)),
        "not-yet-valid": issuer.mint(claims(resource, nbf=now + 600)),
        "unknown-kid": issuer.mint(claims(resource), header={"kid": "k-unknown"}, key=ATTACKER),
        "tampered-payload": remember(tampered),
        "unknown-crit": issuer.mint(claims(resource), header={"crit": ["x-custom"], "x-custom": 1}),
        "jku-elsewhere": issuer.mint(
            claims(resource), header={"jku": "http://127.0.0.1:9/jwks.json"}, key=ATTACKER
        ),
        "garbage": remember("not-a-token-at-all"),
        "garbage-characters": remember("%%%%"),
        "oversized": issuer.mint(claims(resource, pad="x" * 7_000)),
    }


BAD_TOKEN_CASES = {  # case -> the reason code the audit event gives
    "alg-none": "disallowed_alg",
    "hs256-with-public-key": "disallowed_alg",
    "wrong-issuer": "unknown_issuer",
    "issuer-not-a-string": "unknown_issuer",
    "missing-audience": "missing_audience",
    "wrong-audience": "wrong_audience",
    "audience-trailing-slash": "wrong_audience",
    "audience-letter-case": "wrong_audience",
    "expired": "expired",
    "not-yet-valid": "not_yet_valid",
    "unknown-kid": "unknown_kid",
    "tampered-payload": "bad_signature",
    "unknown-crit": "unsupported_crit",
    "jku-elsewhere": "bad_signature",
    "garbage": "malformed",
    "garbage-characters": "token syntax",
    "oversized": "token syntax",
}


@pytest.mark.parametrize(("case", "reason"), BAD_TOKEN_CASES.items(), ids=list(BAD_TOKEN_CASES))
async def test_bad_tokens_get_401_and_never_reach_upstream(
    gateway_for: GatewayFor,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    case: str,
    reason: str,
) -> None:
    gw = await gateway_for()
    token = bad_tokens(issuer, gw.url("/files/mcp"))[case]
    status, headers = await call(gw, token)
    assert status == 401
    params = challenge_params(headers["WWW-Authenticate"])
    assert params["error"] == "invalid_token"
    assert params["resource_metadata"] == gw.url("/.well-known/oauth-protected-resource/files/mcp")
    assert upstream.requests == []
    [rejection] = [
        json.loads(entry) for entry in gateway_log().splitlines() if '"token_rejected"' in entry
    ]
    assert (rejection["status"], rejection["reason"]) == (401, reason)
    good = issuer.mint(issuer.claims(gw.url("/files/mcp")))
    assert (await call(gw, good))[0] == 200  # the same gateway accepts a good token


async def test_verified_tokens_are_cached(
    gateway_for: GatewayFor, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    gw = await gateway_for()
    token = issuer.mint(issuer.claims(gw.url("/files/mcp")))
    for _ in range(5):
        assert (await call(gw, token))[0] == 200
    assert issuer.requests == ["metadata", "jwks"]  # keys discovered and fetched once
    metrics = await metrics_text(gw)
    assert 'mcp_gateway_token_validations_total{outcome="valid",upstream="files"} 1.0' in metrics
    assert 'mcp_gateway_token_validations_total{outcome="cached",upstream="files"} 4.0' in metrics


async def test_a_flood_of_unknown_kids_causes_no_refetch_storm(
    gateway_for: GatewayFor, issuer: LocalIssuer
) -> None:
    gw = await gateway_for()
    resource = gw.url("/files/mcp")
    assert (await call(gw, issuer.mint(issuer.claims(resource))))[0] == 200
    tokens = [
        issuer.mint(issuer.claims(resource), header={"kid": uuid.uuid4().hex}, key=ATTACKER)
        for _ in range(50)
    ]
    statuses = await asyncio.gather(*(call(gw, token) for token in tokens))
    assert {status for status, _ in statuses} == {401}
    assert issuer.requests.count("jwks") <= 2  # the first fetch, then one per cooldown


async def test_rotated_key_is_picked_up_by_one_refetch(
    gateway_for: GatewayFor, issuer: LocalIssuer
) -> None:
    gw = await gateway_for(jwks_refetch_cooldown=0.01)
    resource = gw.url("/files/mcp")
    assert (await call(gw, issuer.mint(issuer.claims(resource))))[0] == 200
    issuer.key = RSAKey.generate_key(2048, parameters={"kid": "k2", "use": "sig"})
    await asyncio.sleep(0.02)  # let the refetch cooldown pass; not a timing assertion
    assert (await call(gw, issuer.mint(issuer.claims(resource))))[0] == 200
    assert issuer.requests.count("jwks") == 2


async def test_key_source_down_fails_closed_then_recovers_without_restart(
    gateway_for: GatewayFor, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    await issuer.stop()
    gw = await gateway_for(jwks_refetch_cooldown=0.05, fetch_timeout=2)
    token = issuer.mint(issuer.claims(gw.url("/files/mcp")))
    status, headers = await call(gw, token)
    assert status == 503
    assert int(headers["Retry-After"]) > 0
    assert upstream.requests == []

    await issuer.start()
    deadline = time.monotonic() + 10
    while (status := (await call(gw, token))[0]) == 503 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert status == 200
    assert len(upstream.requests) == 1


async def test_a_token_from_an_untrusted_issuer_is_refused(
    gateway_for: GatewayFor, upstream: RecordingUpstream
) -> None:
    other = LocalIssuer()
    await other.start()
    try:
        gw = await gateway_for()
        token = other.mint(other.claims(gw.url("/files/mcp")))
        assert (await call(gw, token))[0] == 401
    finally:
        await other.stop()
    assert upstream.requests == []


async def test_introspection(
    gateway_for: GatewayFor, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    gw = await gateway_for(
        authorization_servers=[issuer.auth_server(introspection=issuer.introspection_config())]
    )
    resource = gw.url("/files/mcp")
    active = issuer.opaque(resource)
    assert (await call(gw, active))[0] == 200
    assert (await call(gw, active))[0] == 200  # cached: one introspection call
    assert issuer.requests.count("introspect") == 1
    assert (await call(gw, issuer.opaque(resource, active=False)))[0] == 401
    assert (await call(gw, issuer.opaque("http://127.0.0.1:1/other/mcp")))[0] == 401
    assert (await call(gw, issuer.opaque(resource, exp=int(time.time()) - 100)))[0] == 401
    assert len(upstream.requests) == 2

    await issuer.stop()
    status, headers = await call(gw, issuer.opaque(resource))
    assert status == 503
    assert "Retry-After" in headers


async def test_introspection_with_wrong_client_credentials_fails_closed(
    gateway_for: GatewayFor, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    wrong = issuer.introspection_config() | {"client_secret": remember("not-the-secret")}
    gw = await gateway_for(authorization_servers=[issuer.auth_server(introspection=wrong)])
    assert (await call(gw, issuer.opaque(gw.url("/files/mcp"))))[0] == 503
    assert upstream.requests == []


async def metrics_text(gw: Gateway) -> str:
    async with aiohttp.ClientSession() as http, http.get(gw.url("/metrics")) as resp:
        return await resp.text()


async def test_a_header_too_large_to_parse_is_refused_without_logging_it(
    gateway_for: GatewayFor, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    gw = await gateway_for()
    token = issuer.mint(issuer.claims(gw.url("/files/mcp"), pad="x" * 100_000))
    status, _ = await call(gw, token)
    assert status == 400
    assert upstream.requests == []
    assert token[:40] not in gateway_log()


async def test_each_route_trusts_only_the_servers_it_names(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    second = LocalIssuer()
    await second.start()
    try:
        gw = await start_gateway_for(
            {"name": "a", "route": "/a/mcp", "url": upstream.url, "authorization_servers": ["one"]},
            {"name": "b", "route": "/b/mcp", "url": upstream.url, "authorization_servers": ["two"]},
            auth={
                "resource_server": {
                    "authorization_servers": [
                        issuer.auth_server("one"),
                        second.auth_server("two"),
                    ]
                }
            },
        )
        from_one = issuer.mint(issuer.claims(gw.url("/a/mcp")))
        from_two = second.mint(second.claims(gw.url("/a/mcp")))
        assert (await call(gw, from_one, path="/a/mcp"))[0] == 200
        assert (await call(gw, from_two, path="/a/mcp"))[0] == 401
        for_b = second.mint(second.claims(gw.url("/b/mcp")))
        assert (await call(gw, for_b, path="/b/mcp"))[0] == 200
    finally:
        await second.stop()
    assert len(upstream.requests) == 2


@pytest.mark.parametrize(
    ("padding", "status"),
    [(200_000, 200), (600_000, 503)],
    ids=["large-jwks-read-whole", "oversized-jwks-refused"],
)
async def test_jwks_documents_are_read_whole_up_to_a_limit(
    gateway_for: GatewayFor, issuer: LocalIssuer, padding: int, status: int
) -> None:
    issuer.jwks_padding = padding  # arrives in many chunks; the limit is 512 KiB
    gw = await gateway_for()
    assert (await call(gw, issuer.mint(issuer.claims(gw.url("/files/mcp")))))[0] == status
