"""The gateway as the authorization server (facade mode) with local users, end to end: the
official `mcp` 2.x client registers dynamically, its "user" signs in and approves on the
gateway's own pages, and the SDK checks the gateway's RFC 9207 `iss` itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.oauth.users import hash_password
from tests.conftest import Gateway, StartGateway
from tests.support.oauth_client import (
    AuthorizationError,
    InMemoryTokenStorage,
    OAuthRecord,
    SignIn,
    oauth_list_and_call,
)
from tests.support.processes import HttpServerProcess
from tests.support.secrets import remember

ROUTE = "/files/mcp"
PASSWORD = remember("correct horse battery staple")


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.yaml"
    encoded = hash_password(PASSWORD)
    path.write_text(
        "users:\n"
        f'  alice: {{password_hash: "{encoded}", claims: {{groups: [eng]}}}}\n'
        f'  bob: {{password_hash: "{encoded}", claims: {{groups: [sales]}}}}\n'
    )
    return path


async def facade_gateway(
    start: StartGateway, upstream: HttpServerProcess, users_file: Path
) -> Gateway:
    authorization_server: dict[str, Any] = {
        "login": {"local": {"users_file": str(users_file)}},
        "grants": [
            {"scopes": ["mcp:tools"]},
            {"when": {"groups": ["eng"]}, "scopes": ["files:write"]},
        ],
    }
    return await start(
        {
            "name": "files",
            "route": ROUTE,
            "url": upstream.url,
            "scopes": ["mcp:tools"],
            "policy": {"tools": {"add": ["files:write"]}},
        },
        auth={"authorization_server": authorization_server},
    )


async def test_sdk_client_registers_signs_in_and_calls_a_tool(
    start_gateway_for: StartGateway, sdk_json: HttpServerProcess, users_file: Path
) -> None:
    gw = await facade_gateway(start_gateway_for, sdk_json, users_file)
    outcome, record = await oauth_list_and_call(
        gw.url(ROUTE), "echo", {"text": "hello"}, sign_in=SignIn("alice", PASSWORD)
    )
    assert outcome.call is not None
    assert outcome.call.text == "hello"
    assert "add" not in outcome.tools  # hidden: needs files:write, not granted yet
    assert record.issuer is not None
    assert record.issuer.rstrip("/") == gw.base
    assert record.access_token is not None
    remember(record.access_token)
    if record.refresh_token:
        remember(record.refresh_token)
    urls = record.requested_urls
    assert gw.url("/oauth/register") in urls
    assert any(url.startswith(gw.url("/oauth/sign-in")) for url in urls)
    assert any(url.startswith(gw.url("/oauth/consent")) for url in urls)


async def test_step_up_to_a_granted_scope_succeeds(
    start_gateway_for: StartGateway, sdk_json: HttpServerProcess, users_file: Path
) -> None:
    gw = await facade_gateway(start_gateway_for, sdk_json, users_file)
    record = OAuthRecord()
    outcome, _ = await oauth_list_and_call(
        gw.url(ROUTE),
        "add",
        {"a": 2, "b": 3},
        sign_in=SignIn("alice", PASSWORD),
        storage=InMemoryTokenStorage(),
        record=record,
    )
    assert outcome.call is not None
    assert outcome.call.text == "5"
    assert record.scope is not None
    assert "files:write" in record.scope.split()
    assert len(record.authorization_urls) == 2  # first sign-in, then the step-up


async def test_step_up_beyond_the_users_grants_ends_in_a_clear_refusal(
    start_gateway_for: StartGateway, sdk_json: HttpServerProcess, users_file: Path
) -> None:
    gw = await facade_gateway(start_gateway_for, sdk_json, users_file)
    with pytest.raises(AuthorizationError) as refused:
        await oauth_list_and_call(
            gw.url(ROUTE), "add", {"a": 2, "b": 3}, sign_in=SignIn("bob", PASSWORD)
        )
    assert refused.value.error == "access_denied"
    assert "files:write" in (refused.value.error_description or "")


async def test_a_wrong_password_never_yields_a_code(
    start_gateway_for: StartGateway, sdk_json: HttpServerProcess, users_file: Path
) -> None:
    gw = await facade_gateway(start_gateway_for, sdk_json, users_file)
    with pytest.raises(AuthorizationError, match="answered 401"):
        await oauth_list_and_call(gw.url(ROUTE), "echo", {"text": "x"},
                                  sign_in=SignIn("alice", "wrong"))  # fmt: skip
