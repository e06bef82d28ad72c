"""The gateway as the authorization server (facade mode) with local users, end to end: the
official `mcp` 2.x client registers dynamically, its "user" signs in and approves on the
gateway's own pages, and the SDK checks the gateway's RFC 9207 `iss` itself."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from joserfc import jws

from tests.conftest import Gateway, StartGateway
from tests.support.facade import ROUTE, facade_gateway, write_users
from tests.support.oauth_client import (
    AuthorizationError,
    InMemoryTokenStorage,
    OAuthRecord,
    SignIn,
    oauth_list_and_call,
)
from tests.support.processes import HttpServerProcess, free_port
from tests.support.secrets import remember

PASSWORD = remember("correct horse battery staple")


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    return write_users(tmp_path / "users.yaml", PASSWORD)


async def test_sdk_client_registers_signs_in_and_calls_a_tool(
    start_gateway_for: StartGateway, sdk_json: HttpServerProcess, users_file: Path
) -> None:
    gw = await facade_gateway(start_gateway_for, sdk_json.url, users_file)
    outcome, record = await oauth_list_and_call(
        gw.url(ROUTE), "echo", {"text": "hello"}, sign_in=SignIn("alice", PASSWORD)
    )
    assert outcome.call is not None
    assert outcome.call.text == "hello"
    assert "add" in outcome.tools  # not granted yet, but listed: alice (eng) could step up
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
    gw = await facade_gateway(start_gateway_for, sdk_json.url, users_file)
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
    gw = await facade_gateway(start_gateway_for, sdk_json.url, users_file)
    with pytest.raises(AuthorizationError) as refused:
        await oauth_list_and_call(
            gw.url(ROUTE), "add", {"a": 2, "b": 3}, sign_in=SignIn("bob", PASSWORD)
        )
    assert refused.value.error == "access_denied"
    assert "files:write" in (refused.value.error_description or "")


async def test_a_wrong_password_never_yields_a_code(
    start_gateway_for: StartGateway, sdk_json: HttpServerProcess, users_file: Path
) -> None:
    gw = await facade_gateway(start_gateway_for, sdk_json.url, users_file)
    with pytest.raises(AuthorizationError, match="answered 401"):
        await oauth_list_and_call(gw.url(ROUTE), "echo", {"text": "x"},
                                  sign_in=SignIn("alice", "wrong"))  # fmt: skip


def new_pem_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return remember(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode())


async def bearer_status(gw: Gateway, token: str) -> int:
    """The status of an MCP `initialize` POST through the gateway with ``token``."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}  # fmt: skip
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.post(gw.url(ROUTE), json=body, headers=headers)
    return response.status_code


async def test_signing_key_rotation_keeps_tokens_of_the_previous_key_valid(
    start_gateway_for: StartGateway, sdk_json: HttpServerProcess, users_file: Path
) -> None:
    old_key, new_key = new_pem_key(), new_pem_key()
    port = free_port()
    server = {"port": port, "public_url": f"http://127.0.0.1:{port}"}  # the same issuer throughout
    gw = await facade_gateway(
        start_gateway_for, sdk_json.url, users_file, server, signing_key=old_key
    )
    _, record = await oauth_list_and_call(gw.url(ROUTE), sign_in=SignIn("alice", PASSWORD))
    assert record.access_token is not None
    token = remember(record.access_token)
    old_kid = jws.extract_compact(token.encode()).protected["kid"]
    await gw.running.stop()

    rotated = await facade_gateway(
        start_gateway_for, sdk_json.url, users_file, server,
        signing_key=new_key, previous_signing_keys=[old_key],
    )  # fmt: skip
    async with httpx2.AsyncClient(timeout=10) as http:
        published = (await http.get(rotated.url("/oauth/jwks"))).json()
    kids = [key["kid"] for key in published["keys"]]
    assert len(kids) == 2
    assert kids[1] == old_kid  # the new key first, the old one still published
    assert await bearer_status(rotated, token) == 200
    _, fresh = await oauth_list_and_call(rotated.url(ROUTE), sign_in=SignIn("alice", PASSWORD))
    assert fresh.access_token is not None
    remember(fresh.access_token)
    assert jws.extract_compact(fresh.access_token.encode()).protected["kid"] == kids[0]
    await rotated.running.stop()

    dropped = await facade_gateway(start_gateway_for, sdk_json.url, users_file, server,
                                   signing_key=new_key)  # fmt: skip
    assert await bearer_status(dropped, token) == 401  # the old key is gone: so are its tokens


async def test_a_revoked_access_token_stops_working_at_once(
    start_gateway_for: StartGateway, sdk_json: HttpServerProcess, users_file: Path
) -> None:
    gw = await facade_gateway(start_gateway_for, sdk_json.url, users_file)
    storage = InMemoryTokenStorage()
    _, record = await oauth_list_and_call(
        gw.url(ROUTE), sign_in=SignIn("alice", PASSWORD), storage=storage
    )
    assert record.access_token is not None
    token = remember(record.access_token)
    client = await storage.get_client_info()
    assert client is not None
    assert await bearer_status(gw, token) == 200  # valid, and now in the token cache
    async with httpx2.AsyncClient(timeout=10) as http:
        revoked = await http.post(
            gw.url("/oauth/revoke"), data={"token": token, "client_id": client.client_id}
        )
    assert revoked.status_code == 200
    assert await bearer_status(gw, token) == 401


async def test_browser_based_clients_get_cors_on_registration_and_token_endpoints(
    start_gateway_for: StartGateway, sdk_json: HttpServerProcess, users_file: Path
) -> None:
    app = "http://localhost:6274"  # e.g. the MCP Inspector
    gw = await facade_gateway(
        start_gateway_for, sdk_json.url, users_file, {"allowed_origins": [app]}
    )
    preflight = {"Origin": app, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}  # fmt: skip
    async with httpx2.AsyncClient(timeout=10) as http:
        for path in ("/oauth/register", "/oauth/token", "/oauth/revoke"):
            answer = await http.options(gw.url(path), headers=preflight)
            assert answer.status_code == 204, path
            assert answer.headers["Access-Control-Allow-Origin"] == app
            assert answer.headers["Access-Control-Allow-Methods"] == "POST"
        registered = await http.post(
            gw.url("/oauth/register"),
            json={"redirect_uris": ["http://localhost:6274/oauth/callback"],
                  "token_endpoint_auth_method": "none"},
            headers={"Origin": app},
        )  # fmt: skip
        assert registered.status_code == 201
        assert registered.headers["Access-Control-Allow-Origin"] == app
        token = await http.post(
            gw.url("/oauth/token"), data={"grant_type": "refresh_token"}, headers={"Origin": app}
        )
        assert token.status_code == 401  # invalid_client: an OAuth error the script can read
        assert token.headers["Access-Control-Allow-Origin"] == app
        foreign = await http.options(
            gw.url("/oauth/token"), headers={**preflight, "Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        assert "Access-Control-Allow-Origin" not in foreign.headers
        # The pages are navigated to, never fetched: no preflight is answered for them.
        page = await http.options(gw.url("/oauth/consent"), headers=preflight)
        assert page.status_code == 405
        assert "Access-Control-Allow-Methods" not in page.headers
