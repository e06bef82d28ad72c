"""The facade with a Client ID Metadata Document client, end to end: no registration, the
client id is the URL of its JSON document (served here on 127.0.0.1, so the gateway runs with
its tests-only loopback switch); the "user" signs in and approves on the gateway's pages, the
client redeems the code, and its token calls a tool through the gateway."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest
from aiohttp import web

from gateway.oauth.upstream import pkce_pair
from tests.conftest import Gateway, StartGateway
from tests.support.facade import ROUTE, facade_gateway, write_users
from tests.support.oauth_client import (
    SignIn,
    follow_authorization,
    loopback_redirect_uri,
)
from tests.support.processes import HttpServerProcess
from tests.support.sdk_client import ToolOutcome, connect
from tests.support.secrets import remember

DOCUMENT_PATH = "/oauth/client.json"
PASSWORD = remember("correct horse battery staple")


class DocumentHost:
    """The client's web server: its metadata document, and how often the gateway fetched it."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {}
        self.fetches = 0
        self.client_id = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(DOCUMENT_PATH, self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.client_id = f"http://127.0.0.1:{self._runner.addresses[0][1]}{DOCUMENT_PATH}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response(self.document, headers={"Cache-Control": "max-age=600"})


@pytest.fixture
async def host() -> AsyncIterator[DocumentHost]:
    served = DocumentHost()
    await served.start()
    yield served
    await served.stop()


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    return write_users(tmp_path / "users.yaml", PASSWORD)


async def cimd_gateway(
    start: StartGateway, upstream: HttpServerProcess, users_file: Path
) -> Gateway:
    return await facade_gateway(
        start, upstream.url, users_file,
        dynamic_registration=False,
        client_id_metadata_documents={"allow_loopback_for_testing": True},
    )  # fmt: skip


def document(client_id: str, redirect_uri: str) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "client_name": "CIMD test client",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }


def authorize_url(gw: Gateway, client_id: str, redirect_uri: str) -> tuple[str, str, str]:
    """(authorization request URL, its state, the PKCE verifier)."""
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    query = urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
        "state": state, "code_challenge": challenge, "code_challenge_method": "S256",
        "resource": gw.url(ROUTE),
    })  # fmt: skip
    return gw.url(f"/oauth/authorize?{query}"), state, verifier


async def authorization_code(gw: Gateway, client_id: str, redirect_uri: str) -> tuple[str, str]:
    """(code, PKCE verifier) from the gateway's authorization endpoint, as alice approving."""
    url, state, verifier = authorize_url(gw, client_id, redirect_uri)
    result = await follow_authorization(url, redirect_uri, sign_in=SignIn("alice", PASSWORD))
    assert (result.state, result.iss) == (state, gw.base)
    return result.code, verifier


async def test_a_cimd_client_gets_a_token_and_calls_a_tool(
    start_gateway_for: StartGateway,
    sdk_json: HttpServerProcess,
    users_file: Path,
    host: DocumentHost,
) -> None:
    redirect_uri = loopback_redirect_uri()
    host.document = document(host.client_id, redirect_uri)
    gw = await cimd_gateway(start_gateway_for, sdk_json, users_file)
    async with httpx2.AsyncClient(timeout=10.0, trust_env=False) as http:
        metadata = (await http.get(gw.url("/.well-known/oauth-authorization-server"))).json()
        assert metadata["client_id_metadata_document_supported"] is True
        assert "registration_endpoint" not in metadata
        code, verifier = await authorization_code(gw, host.client_id, redirect_uri)
        response = await http.post(
            metadata["token_endpoint"],
            data={
                "grant_type": "authorization_code", "code": remember(code),
                "redirect_uri": redirect_uri, "client_id": host.client_id,
                "code_verifier": verifier, "resource": gw.url(ROUTE),
            },
        )  # fmt: skip
    assert response.status_code == 200, response.text
    token = remember(response.json()["access_token"])
    async with connect(gw.url(ROUTE), headers={"Authorization": f"Bearer {token}"}) as client:
        outcome = ToolOutcome.from_result(await client.call_tool("echo", {"text": "from cimd"}))
    assert outcome.text == "from cimd"
    assert host.fetches == 1  # authorize, consent and token all used the cached document


async def test_a_document_that_does_not_name_itself_gets_an_error_page(
    start_gateway_for: StartGateway,
    sdk_json: HttpServerProcess,
    users_file: Path,
    host: DocumentHost,
) -> None:
    redirect_uri = loopback_redirect_uri()
    host.document = document("https://impostor.example/client.json", redirect_uri)
    gw = await cimd_gateway(start_gateway_for, sdk_json, users_file)
    url, _, _ = authorize_url(gw, host.client_id, redirect_uri)
    async with httpx2.AsyncClient(timeout=10.0, trust_env=False) as http:
        page = await http.get(url)
    assert page.status_code == 400
    assert "location" not in page.headers  # the redirect URI cannot be trusted
    assert "client_id is not its URL" in page.text
