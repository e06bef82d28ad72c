"""`max_age` through federated login (OpenID Connect Core sections 3.1.2.1 and 3.1.3.7).

A client that asks the gateway for `max_age` wants a user who signed in within that many
seconds. The gateway passes it on to the provider; the provider's ID token must then carry
`auth_time`, and a time that old or older refuses the sign-in: a provider that reused a sign-in
of its own (or ignores `max_age`) must not let the gateway vouch for a fresh one. What the
gateway records, and writes into its tokens, is the provider's `auth_time`, not the moment the
user came back. The scripted provider here signs the user in at once whatever it is asked, so
its ID token says whatever the test puts in it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import pytest

from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.federation import ROUTE, authorized_token_claims
from tests.support.http_upstream import RecordingUpstream
from tests.support.oauth_client import AuthorizationError
from tests.support.scripted_provider import CLIENT_ID, ScriptedProvider


@pytest.fixture
async def provider() -> AsyncIterator[ScriptedProvider]:
    async with ScriptedProvider(subject="alice") as running:
        yield running


async def gateway(start: StartGateway, provider: ScriptedProvider, upstream_url: str) -> Gateway:
    login = {"oidc": {"issuer": provider.issuer, "client_id": CLIENT_ID,
                      "scopes": ["openid"], "claims_from": ["id_token"]}}  # fmt: skip
    return await start(
        {"name": "files", "route": ROUTE, "url": upstream_url, "scopes": ["mcp:tools"]},
        auth={"authorization_server": {"login": login, "grants": [{"scopes": ["mcp:tools"]}]}},
    )


def asked_for(provider: ScriptedProvider) -> list[str]:
    """The `max_age` values of the sign-ins the provider was sent."""
    return [
        value
        for seen in provider.seen
        if seen.path == "/auth"
        for value in parse_qs(seen.query).get("max_age", [])
    ]


def refusals() -> list[str]:
    lines = [json.loads(line) for line in gateway_log().splitlines() if line.startswith("{")]
    return [line["reason"] for line in lines if line.get("event") == "upstream_login_refused"]


@pytest.mark.parametrize(
    "auth_time",
    [
        pytest.param(None, id="no-auth_time"),
        pytest.param(-3600, id="an-hour-old"),
        pytest.param("yesterday", id="not-a-number"),
        pytest.param(True, id="a-boolean"),
        pytest.param(+3600, id="in-the-future"),
    ],
)
async def test_a_provider_that_does_not_show_a_recent_sign_in_is_refused(
    start_gateway_for: StartGateway,
    provider: ScriptedProvider,
    upstream: RecordingUpstream,
    auth_time: Any,
) -> None:
    if isinstance(auth_time, int) and not isinstance(auth_time, bool):
        auth_time += int(time.time())
    if auth_time is not None:
        provider.id_token_claims = {"auth_time": auth_time}
    gw = await gateway(start_gateway_for, provider, upstream.url)
    with pytest.raises(AuthorizationError) as refused:
        await authorized_token_claims(gw, max_age="300")
    assert asked_for(provider) == ["300"]  # passed on: the provider was asked
    assert refused.value.error == "access_denied"
    assert refused.value.error_description == "The sign-in could not be verified"
    assert refusals() == ["id_token claims refused: auth_time"]
    assert '"signed_in"' not in gateway_log()


async def test_a_recent_sign_in_passes_and_its_time_is_the_one_the_tokens_carry(
    start_gateway_for: StartGateway, provider: ScriptedProvider, upstream: RecordingUpstream
) -> None:
    signed_in_at = int(time.time()) - 120  # within max_age: the provider's own earlier sign-in
    provider.id_token_claims = {"auth_time": signed_in_at}
    gw = await gateway(start_gateway_for, provider, upstream.url)
    claims = await authorized_token_claims(gw, max_age="300")
    assert asked_for(provider) == ["300"]
    assert claims["auth_time"] == signed_in_at  # not the moment the user came back
    assert claims["sub"] == "alice"
    assert refusals() == []


async def test_without_max_age_a_token_without_auth_time_signs_in(
    start_gateway_for: StartGateway, provider: ScriptedProvider, upstream: RecordingUpstream
) -> None:
    """Providers add `auth_time` only when asked: its absence refuses nothing by itself."""
    gw = await gateway(start_gateway_for, provider, upstream.url)
    before = int(time.time())
    claims = await authorized_token_claims(gw)
    assert asked_for(provider) == []
    assert before <= claims["auth_time"] <= int(time.time()) + 1
    assert refusals() == []
