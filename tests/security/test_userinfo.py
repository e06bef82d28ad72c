"""Attacks through the provider's UserInfo answer, against a whole gateway (federated login).

Whoever controls or sits in front of UserInfo (a misconfigured proxy, a compromised endpoint, a
provider bug) could hand the gateway another user's claims, a body two parsers read two ways, a
forged or misdirected signed answer, a redirect to somewhere else, or nothing at all. Each must
refuse the sign-in: `access_denied` to the client with a fixed description (nothing from the
provider), one `upstream_login_refused` warning with a `userinfo_*` reason, no `signed_in`, and
never a partial grant from the ID token alone. The provider's access token goes only in the
`Authorization` header and never into the log (the tripwire checks every test's log).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.federation import APPROVE, ROUTE, authorization_query
from tests.support.http_upstream import RecordingUpstream
from tests.support.oauth_client import (
    AuthorizationError,
    follow_authorization,
    loopback_redirect_uri,
)
from tests.support.scripted_provider import CLIENT_ID, ScriptedProvider

Script = Callable[[ScriptedProvider], Any]


def records() -> list[dict[str, Any]]:
    return [json.loads(line) for line in gateway_log().splitlines() if line.startswith("{")]


@pytest.fixture
async def provider() -> AsyncIterator[ScriptedProvider]:
    async with ScriptedProvider(subject="mallory") as running:
        running.id_token_claims = {"email": "mallory@example.test"}
        yield running


async def gateway(start: StartGateway, provider: ScriptedProvider, upstream_url: str) -> Gateway:
    """Everyone who signs in may get `mcp:tools`; group `eng` also `files:write`. A failed
    UserInfo must not fall back to the first rule on the ID token's claims."""
    login = {"oidc": {"issuer": provider.issuer, "client_id": CLIENT_ID,
                      "scopes": ["openid", "groups"], "fetch_timeout": 1.0}}  # fmt: skip
    grants = [{"scopes": ["mcp:tools"]}, {"when": {"groups": ["eng"]}, "scopes": ["files:write"]}]
    return await start(
        {"name": "files", "route": ROUTE, "url": upstream_url, "scopes": ["mcp:tools"]},
        auth={"authorization_server": {"login": login, "grants": grants}},
    )


async def authorize(gw: Gateway, scope: str) -> str:
    redirect_uri = loopback_redirect_uri()
    query = await authorization_query(gw, redirect_uri, scope)
    result = await follow_authorization(
        gw.url("/oauth/authorize?" + query), redirect_uri, sign_in=APPROVE
    )
    return result.code


def claim_to_be_alice(p: ScriptedProvider) -> Any:
    return p.json_userinfo({"sub": "alice", "groups": ["eng"]})


def repeated_groups(p: ScriptedProvider) -> Any:
    # Python's json keeps the last `groups`, other parsers the first: refuse both readings.
    return p.raw_userinfo(b'{"sub": "mallory", "groups": ["sales"], "groups": ["eng"]}')


def forged_signature(p: ScriptedProvider) -> Any:
    return p.jwt_userinfo({"sub": "mallory", "groups": ["eng"]}, forged=True)


def signed_for_another_client(p: ScriptedProvider) -> Any:
    return p.jwt_userinfo({"sub": "mallory", "groups": ["eng"], "aud": "another-client"})


def unsigned_jwt(p: ScriptedProvider) -> Any:
    token = p.signer.mint({"sub": "mallory", "groups": ["eng"]}, header={"alg": "none"})
    return p.raw_userinfo(token.encode(), content_type="application/jwt")


def redirect_to_a_friendlier_endpoint(p: ScriptedProvider) -> Any:
    async def answer(request: web.Request) -> web.StreamResponse:
        if request.query.get("friendly"):
            return web.json_response({"sub": "mallory", "groups": ["eng"]})
        raise web.HTTPFound(p.issuer + "/userinfo?friendly=1")

    return answer


def html_error_page(p: ScriptedProvider) -> Any:
    return p.raw_userinfo(b"<html>upstream-detail-91c2</html>", status=502,
                          content_type="text/html")  # fmt: skip


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        pytest.param(claim_to_be_alice, "userinfo_sub_mismatch", id="another-users-sub"),
        pytest.param(repeated_groups, "userinfo_not_json", id="repeated-key"),
        pytest.param(forged_signature, "userinfo_jwt_invalid", id="forged-jwt"),
        pytest.param(signed_for_another_client, "userinfo_jwt_claims", id="jwt-other-aud"),
        pytest.param(unsigned_jwt, "userinfo_jwt_invalid", id="alg-none"),
        pytest.param(redirect_to_a_friendlier_endpoint, "userinfo_http_status", id="redirect"),
        pytest.param(html_error_page, "userinfo_http_status", id="502-html"),
    ],
)
async def test_an_untrustworthy_userinfo_answer_refuses_the_sign_in(
    start_gateway_for: StartGateway,
    provider: ScriptedProvider,
    upstream: RecordingUpstream,
    script: Script,
    reason: str,
) -> None:
    provider.userinfo = script(provider)
    gw = await gateway(start_gateway_for, provider, upstream.url)
    with pytest.raises(AuthorizationError) as refused:
        await authorize(gw, "mcp:tools")  # the ID token alone would get this: it must not
    assert refused.value.error == "access_denied"
    assert refused.value.error_description == "The sign-in could not be verified"
    userinfo = [seen for seen in provider.seen if seen.path == "/userinfo"]
    assert len(userinfo) == 1  # asked once; a redirect is not followed
    assert userinfo[0].authorization == f"Bearer {provider.access_tokens[-1]}"
    assert userinfo[0].query == ""
    refusals = [r for r in records() if r.get("event") == "upstream_login_refused"]
    assert [(r["level"], r["reason"]) for r in refusals] == [("warning", reason)]
    assert not [r for r in records() if r.get("event") == "signed_in"]
    assert "upstream-detail-91c2" not in gateway_log()
    assert not [r for r in records() if r.get("level") in {"error", "critical"}]


async def test_a_userinfo_endpoint_that_hangs_refuses_the_sign_in(
    start_gateway_for: StartGateway, provider: ScriptedProvider, upstream: RecordingUpstream
) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response({"sub": "mallory", "groups": ["eng"]})

    provider.userinfo = hang
    gw = await gateway(start_gateway_for, provider, upstream.url)
    try:
        with pytest.raises(AuthorizationError) as refused:
            await authorize(gw, "mcp:tools")
    finally:
        release.set()
    assert refused.value.error == "access_denied"
    [refusal] = [r for r in records() if r.get("event") == "upstream_login_refused"]
    assert refusal["reason"] == "userinfo_timeout"


async def test_an_honest_answer_grants_what_the_user_is_entitled_to(
    start_gateway_for: StartGateway, provider: ScriptedProvider, upstream: RecordingUpstream
) -> None:
    """The same gateway and provider with a truthful UserInfo: the refusals above are the
    answers' doing, not the setup's."""
    provider.userinfo = provider.json_userinfo({"sub": "mallory", "groups": ["eng"]})
    gw = await gateway(start_gateway_for, provider, upstream.url)
    assert await authorize(gw, "mcp:tools files:write")
    [signed_in] = [r for r in records() if r.get("event") == "signed_in"]
    assert signed_in["sub"] == "mallory"
