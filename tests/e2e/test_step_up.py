"""Step-up from a client that behaves like an LLM host, in the demo (config/demo.yaml, the gateway
as its own authorization server in front of examples/demo_server.py).

The host lists tools and calls only what it was shown, as the MCP Inspector and LLM hosts do. So
a tool the user could be granted must be listed (annotated with the scopes it needs) for step-up
to start at all: alice, an editor, sees `write_file` needing files:write, calls it, gets the 403
challenge, re-authorizes through the gateway's sign-in and consent pages and writes; bob, whose
grants cannot reach files:write, never sees it; nobody sees `delete_file` (files:admin, granted
to no demo user)."""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.shared.auth import OAuthClientMetadata
from prometheus_client import CollectorRegistry
from pydantic import AnyUrl

from gateway.config import load_config
from gateway.policy.grants import ATTAINABLE_SCOPE_CLAIM
from gateway.policy.visibility import REQUIRED_SCOPES_META
from gateway.web.app import create_app
from gateway.web.server import RunningGateway, start_gateway
from tests.conftest import gateway_log
from tests.support.facade import write_users
from tests.support.inspector import InspectorBrowser, run_inspector
from tests.support.oauth_client import (
    HttpExchange,
    InMemoryTokenStorage,
    SignIn,
    follow_authorization,
    loopback_redirect_uri,
)
from tests.support.processes import ManagedProcess, free_port
from tests.support.sdk_client import connect
from tests.support.secrets import remember

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO_ROOT / "config" / "demo.yaml"
ROUTE = "/demo/mcp"


@dataclass
class Demo:
    url: str
    password: str


@pytest.fixture
async def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Demo]:
    """config/demo.yaml as shipped, with the demo users (`./dev demo`'s: alice an editor, bob
    nobody special) and the demo server."""
    password = remember(os.urandom(12).hex())
    users = write_users(tmp_path / "users.yaml", password, {"alice": ["editors"], "bob": []})
    server_port, port = free_port(), free_port()
    server = ManagedProcess(
        [
            sys.executable,
            str(REPO_ROOT / "examples" / "demo_server.py"),
            "--port",
            str(server_port),
        ],
        ready_port=server_port,
        name="demo-server",
    )
    monkeypatch.setenv("DEMO_USERS_FILE", str(users))
    monkeypatch.setenv("DEMO_UPSTREAM_URL", f"http://127.0.0.1:{server_port}/mcp")
    monkeypatch.setenv("DEMO_PUBLIC_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MCP_GATEWAY_SERVER__PORT", str(port))
    monkeypatch.setenv("MCP_GATEWAY_LOG__FORMAT", "json")
    config = load_config(DEMO_CONFIG)
    async with server:
        running: RunningGateway = await start_gateway(
            config, create_app(config, registry=CollectorRegistry())
        )
        try:
            yield Demo(f"http://127.0.0.1:{port}{ROUTE}", password)
        finally:
            await running.stop()


@dataclass
class Host:
    """What the host saw: each listing (tool -> the scopes it is annotated with), the HTTP
    exchanges of its MCP client, and each authorization it went through."""

    listings: list[dict[str, list[str] | None]] = field(default_factory=list)
    exchanges: list[HttpExchange] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    storage: InMemoryTokenStorage = field(default_factory=InMemoryTokenStorage)


async def run_host(
    url: str, user: SignIn, host: Host, wanted: str, arguments: dict[str, Any]
) -> Any:
    """An LLM host on the `mcp` SDK: sign in when asked, list tools, and call `wanted` only if
    the list showed it (returns None otherwise), as a host offers its model only listed tools.
    The SDK's OAuth answers a 403 insufficient_scope by re-authorizing with the union of held
    and challenged scopes, then retries the call."""
    redirect_uri = loopback_redirect_uri()
    pending: list[AuthorizationCodeResult] = []

    async def redirect(authorization_url: str) -> None:
        host.authorizations.append(authorization_url)
        pending.append(await follow_authorization(authorization_url, redirect_uri, sign_in=user))

    async def callback() -> AuthorizationCodeResult:
        return pending.pop()

    provider = OAuthClientProvider(
        url,
        client_metadata=OAuthClientMetadata(
            client_name="an LLM host",
            redirect_uris=[AnyUrl(redirect_uri)],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=host.storage,
        redirect_handler=redirect,
        callback_handler=callback,
    )

    async def log(response: httpx2.Response) -> None:
        request = response.request
        host.exchanges.append(HttpExchange(request.method, str(request.url), response.status_code))

    async with (
        httpx2.AsyncClient(
            auth=provider,
            timeout=httpx2.Timeout(30.0, read=300.0),
            event_hooks={"response": [log]},
            trust_env=False,
        ) as http,
        connect(url, http_client=http) as client,
    ):
        listing = await list_tools(client)
        host.listings.append(listing)
        if wanted not in listing:
            return None
        result = await client.call_tool(wanted, arguments)
        host.listings.append(await list_tools(client))
        return result


async def list_tools(client: Client) -> dict[str, list[str] | None]:
    return {
        tool.name: (tool.meta or {}).get(REQUIRED_SCOPES_META)
        for tool in (await client.list_tools()).tools
    }


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (the gateway checked it)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def scopes_asked(authorization_url: str) -> set[str]:
    return set(parse_qs(urlsplit(authorization_url).query)["scope"][0].split())


async def test_alice_is_shown_write_file_steps_up_and_writes(demo: Demo) -> None:
    host = Host()
    result = await run_host(
        demo.url,
        SignIn("alice", demo.password),
        host,
        "write_file",
        {"path": "notes/stepped-up.txt", "content": "written after step-up"},
    )
    before, after = host.listings
    assert before == {"list_files": None, "read_file": None, "write_file": ["files:write"]}
    assert after == {"list_files": None, "read_file": None, "write_file": None}
    assert result is not None
    assert not result.is_error
    assert "notes/stepped-up.txt" in json.dumps(result.model_dump(mode="json"))
    # The call went out, was challenged (403), alice re-authorized, and the retry succeeded.
    calls = [e for e in host.exchanges if e.method == "POST" and e.url == demo.url]
    statuses = [e.status for e in calls]
    assert 403 in statuses
    assert statuses[statuses.index(403) + 1 :].count(200) >= 1
    first, step_up = host.authorizations
    assert scopes_asked(first) - {"offline_access"} == {"files:read"}  # the route's baseline
    assert "files:write" in scopes_asked(step_up)
    tokens = host.storage.tokens
    assert tokens is not None
    assert tokens.scope is not None
    remember(tokens.access_token)
    assert "files:write" in tokens.scope.split()
    assert jwt_claims(tokens.access_token)[ATTAINABLE_SCOPE_CLAIM] == "files:read files:write"


async def test_bob_is_never_shown_write_file_and_nobody_delete_file(demo: Demo) -> None:
    host = Host()
    result = await run_host(
        demo.url, SignIn("bob", demo.password), host, "write_file", {"path": "x", "content": "x"}
    )
    assert result is None  # not shown, so never called
    assert host.listings == [{"list_files": None, "read_file": None}]
    assert all(e.status != 403 for e in host.exchanges)
    assert len(host.authorizations) == 1
    # Called anyway (a client that ignores lists): the 403 challenge, and a message saying
    # re-authorizing cannot help.
    tokens = host.storage.tokens
    assert tokens is not None
    remember(tokens.access_token)
    assert jwt_claims(tokens.access_token)[ATTAINABLE_SCOPE_CLAIM] == "files:read"
    body = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {"name": "write_file", "arguments": {"path": "x", "content": "x"}},
    }
    headers = {
        "Authorization": f"Bearer {tokens.access_token}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(demo.url, json=body, headers=headers) as resp,
    ):
        assert resp.status == 403
        assert resp.headers["WWW-Authenticate"].startswith(
            'Bearer error="insufficient_scope", scope="files:write"'
        )
        error = (await resp.json())["error"]
    assert error["code"] == -31043
    assert error["message"] == (
        "write_file needs files:write; this client's token has files:read. This user cannot be "
        "granted files:write: ask an administrator for access."
    )


async def test_delete_file_is_listed_for_nobody(demo: Demo) -> None:
    for user in ("alice", "bob"):
        host = Host()
        await run_host(demo.url, SignIn(user, demo.password), host, "list_files", {})
        assert all("delete_file" not in listing for listing in host.listings), user


async def test_the_inspector_cli_lists_write_file_for_alice_and_its_call_is_challenged(
    demo: Demo, tmp_path: Path
) -> None:
    """The MCP Inspector CLI 2.x with alice's files:read token (its `--header` option; signing in
    by itself it asks for every scope in `scopes_supported` and gets files:write at once, see
    the tests below). It checks tools/list before it calls a tool and refuses one it was not
    shown."""
    host = Host()
    await run_host(demo.url, SignIn("alice", demo.password), host, "list_files", {})
    tokens = host.storage.tokens
    assert tokens is not None
    assert tokens.scope is not None
    assert "files:write" not in tokens.scope.split()
    token = remember(tokens.access_token)
    bearer = f"Authorization: Bearer {token}"
    listed = await run_inspector(demo.url, tmp_path, "--method", "tools/list", "--header", bearer)
    assert listed.returncode == 0, listed.stderr
    tools = {tool["name"]: tool.get("_meta", {}) for tool in listed.json()["tools"]}
    assert set(tools) == {"list_files", "read_file", "write_file"}
    assert tools["write_file"] == {REQUIRED_SCOPES_META: ["files:write"]}
    called = await run_inspector(
        demo.url, tmp_path, "--method", "tools/call", "--tool-name", "write_file",
        "--tool-arg", "path=notes/inspector.txt", "content=hi", "--header", bearer,
    )  # fmt: skip
    assert called.returncode != 0
    assert 'Insufficient scope: required \\"files:write\\"' in called.stdout + called.stderr
    completed = [
        json.loads(line)
        for line in gateway_log().splitlines()
        if '"request_completed"' in line and '"write_file"' in line
    ]
    assert [(c["status"], c["decision"]) for c in completed] == [(403, "insufficient_scope")]


def logged(event: str) -> list[dict[str, Any]]:
    """The gateway's log records of ``event`` in this test so far."""
    records = (json.loads(line) for line in gateway_log().splitlines() if line.startswith("{"))
    return [record for record in records if record.get("event") == event]


DELIVERED = 200
"""The access line's status of a call whose result reached the Inspector. It reads the result
from the SSE stream and may close the connection before the stream's end is written: the
gateway then records 499 (client closed) for it."""


def write_file_calls() -> list[tuple[int, str, list[str]]]:
    """(status, decision, granted_scopes) of each write_file call the gateway completed."""
    return [
        (DELIVERED if line["status"] == 499 else line["status"], line["decision"],
         line["granted_scopes"])
        for line in logged("request_completed")
        if line["rpc_method"] == "tools/call" and line["name"] == "write_file"
    ]  # fmt: skip


def listed_meta(listed: Any) -> dict[str, dict[str, Any]]:
    return {tool["name"]: tool.get("_meta", {}) for tool in listed["tools"]}


def inspector_callback() -> str:
    """The Inspector's loopback OAuth callback listener, on a port of its own."""
    return f"http://127.0.0.1:{free_port()}/oauth/callback"


WRITE = ("--method", "tools/call", "--tool-name", "write_file")
WRITE_ARGS = ("--tool-arg", "path=notes/inspector.txt", "content=hi")


async def test_the_inspector_cli_signs_in_as_alice_by_itself_and_gets_what_her_grants_give(
    demo: Demo, tmp_path: Path
) -> None:
    """The Inspector CLI's own sign-in, as it comes: it asks for every scope the protected
    resource metadata lists (files:admin files:read files:write offline_access). The gateway
    narrows that to what alice's grants give (RFC 6749 3.3), so she holds files:write from the
    start: write_file is listed without a requiredScopes annotation and her call writes, with
    no challenge. files:admin is refused, and delete_file stays hidden."""
    home, callback = tmp_path / "home", inspector_callback()
    async with InspectorBrowser(tmp_path / "browser", "alice", demo.password) as browser:
        listed = await run_inspector(
            demo.url, home, "--method", "tools/list", "--callback-url", callback, env=browser.env
        )
        assert listed.returncode == 0, listed.stderr
        assert listed_meta(listed.json()) == {"list_files": {}, "read_file": {}, "write_file": {}}
        (visit,) = await browser.settle()
        assert "error" not in visit, visit
        assert visit["callback_status"] == 200
        assert scopes_asked(visit["authorization_url"]) == {
            "files:admin", "files:read", "files:write", "offline_access"
        }  # fmt: skip
        called = await run_inspector(
            demo.url, home, *WRITE, *WRITE_ARGS, "--callback-url", callback, env=browser.env
        )
        assert called.returncode == 0, called.stderr
        assert called.json()["structuredContent"] == {
            "result": "created notes/inspector.txt (2 characters)"
        }
        # Its secret store is in memory, so it signs in again; it now asks for what it was
        # granted the first time (its registration and that scope are kept in its home).
        again = (await browser.settle())[1]
        assert "error" not in again, again
        assert scopes_asked(again["authorization_url"]) == {
            "files:read", "files:write", "offline_access"
        }  # fmt: skip
    # What the tokens it got hold: the gateway's own records of them.
    assert [(e["sub"], e["scopes"], e["narrowed"]) for e in logged("grant_refused")] == [
        ("alice", ["files:admin"], True)
    ]
    assert [(e["sub"], e["scopes"]) for e in logged("token_issued")] == [
        ("alice", ["files:read", "files:write", "offline_access"])
    ] * 2
    assert write_file_calls() == [(DELIVERED, "allow", ["files:read", "files:write"])]


async def test_the_inspector_cli_asking_for_files_read_is_shown_write_file_and_challenged(
    demo: Demo, tmp_path: Path
) -> None:
    """The Inspector CLI configured to ask for files:read only (`oauth.scopes` in its server
    entry), signing in by itself as alice: write_file is listed annotated with files:write, and
    its call gets the gateway's 403 insufficient_scope. The Inspector then asks the user whether
    to step up: with nobody to answer it declines; answered "y", it re-authorizes with
    files:write added and its retried call writes."""
    home, callback = tmp_path / "home", inspector_callback()
    config = tmp_path / "mcp.json"
    entry = {"type": "streamable-http", "url": demo.url, "oauth": {"scopes": "files:read"}}
    config.write_text(json.dumps({"mcpServers": {"demo": entry}}))
    server = ("--config", str(config), "--server", "demo", "--callback-url", callback)
    async with InspectorBrowser(tmp_path / "browser", "alice", demo.password) as browser:
        listed = await run_inspector(None, home, *server, "--method", "tools/list", env=browser.env)
        assert listed.returncode == 0, listed.stderr
        assert listed_meta(listed.json()) == {
            "list_files": {},
            "read_file": {},
            "write_file": {REQUIRED_SCOPES_META: ["files:write"]},
        }
        (visit,) = await browser.settle()
        assert "error" not in visit, visit
        assert scopes_asked(visit["authorization_url"]) == {"files:read", "offline_access"}

        declined = await run_inspector(None, home, *server, *WRITE, *WRITE_ARGS, env=browser.env)
        assert declined.returncode != 0
        assert "This operation needs additional scope: files:write." in declined.stderr
        assert "Step-up authorization declined." in declined.stderr
        assert write_file_calls() == [(403, "insufficient_scope", ["files:read"])]
        assert len(await browser.settle()) == 2

        stepped_up = await run_inspector(
            None, home, *server, *WRITE, *WRITE_ARGS, env=browser.env, answer="y\n"
        )
        assert stepped_up.returncode == 0, stepped_up.stderr
        assert stepped_up.json()["structuredContent"] == {
            "result": "created notes/inspector.txt (2 characters)"
        }
        sign_in, step_up = (await browser.settle())[2:]
        assert "error" not in step_up, step_up
        assert scopes_asked(sign_in["authorization_url"]) == {"files:read", "offline_access"}
        assert scopes_asked(step_up["authorization_url"]) == {
            "files:read", "files:write", "offline_access"
        }  # fmt: skip
    assert write_file_calls() == [
        (403, "insufficient_scope", ["files:read"]),
        (403, "insufficient_scope", ["files:read"]),
        (DELIVERED, "allow", ["files:read", "files:write"]),
    ]
    assert [e["scopes"] for e in logged("token_issued")] == [
        ["files:read", "offline_access"]
    ] * 3 + [["files:read", "files:write", "offline_access"]]
    assert logged("grant_refused") == []
