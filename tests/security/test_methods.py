"""Method names the policy did not decide never reach an upstream.

An MCP method needs the route's scopes (named calls their per-name rule). Any other method is
decided by its `policy.methods` entry, else by `policy.default`. A look-alike of an MCP method
(`Tools/Call`, a trailing space, a NUL) is refused with 400 before any policy applies: an upstream
that normalised it would run a call whose per-tool rule was never consulted.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Gateway, StartGateway
from tests.support.configs import gateway_document, write_yaml
from tests.support.http_upstream import RecordingUpstream
from tests.support.local_issuer import LocalIssuer

POLICY = {
    "default": "deny",
    "tools": {"read_file": ["files:read"]},
    "methods": {"x/vendor": ["vendor:use"], "x/off": "deny"},
}


async def gateway(
    start: StartGateway, issuer: LocalIssuer, url: str, policy: dict[str, Any]
) -> Gateway:
    return await start(
        {
            "name": "files",
            "route": "/files/mcp",
            "url": url,
            "scopes": ["mcp:tools"],
            "policy": policy,
        },
        {"name": "open", "route": "/open/mcp", "url": url, "allow_anonymous": True},
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
    )


@pytest.fixture
async def gw(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> Gateway:
    return await gateway(start_gateway_for, issuer, upstream.url, POLICY)


async def post(
    gw: Gateway, body: object, token: str | None = None, route: str = "/files/mcp"
) -> tuple[int, dict[str, str], Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url(route), data=json.dumps(body), headers=headers) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.json()


def request(method: str, rpc_id: int = 3, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params}


def token_for(gw: Gateway, issuer: LocalIssuer, scope: str) -> str:
    return issuer.mint(issuer.claims(gw.url("/files/mcp"), scope=scope))


VARIANTS = [
    ("case", request("Tools/Call", name="read_file")),
    ("upper", request("TOOLS/CALL", name="read_file")),
    ("trailing-space", request("tools/call ", name="read_file")),
    ("leading-tab", request("\ttools/call", name="read_file")),
    ("nul", request("tools/call\x00", name="read_file")),
    ("zero-width-space", request("tools/\u200bcall", name="read_file")),
    ("list-variant", request("Tools/List")),
    ("notification", {"jsonrpc": "2.0", "method": "Notifications/Initialized"}),
    ("in-batch", [request("tools/list", 1), request("tools/call ", 2, name="read_file")]),
]


@pytest.mark.parametrize("body", [v[1] for v in VARIANTS], ids=[v[0] for v in VARIANTS])
@pytest.mark.parametrize("route", ["/files/mcp", "/open/mcp"], ids=["policy", "anonymous"])
async def test_a_look_alike_of_an_mcp_method_is_refused_and_not_forwarded(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream, body: object, route: str
) -> None:
    token = token_for(gw, issuer, "mcp:tools files:read vendor:use")
    status, _, answer = await post(gw, body, token, route)
    assert status == 400
    assert answer["error"]["code"] == -32600
    assert answer["error"]["data"]["reason"] == "method_variant"
    assert upstream.requests == []


@pytest.mark.parametrize("method", ["x/other", "", "GET", "(response)", "X/Vendor"], ids=str)
async def test_an_unknown_method_is_decided_by_the_default_rule(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream, method: str
) -> None:
    token = token_for(gw, issuer, "mcp:tools files:read vendor:use")
    status, headers, answer = await post(gw, request(method), token)
    assert status == 403
    assert "WWW-Authenticate" not in headers
    assert answer["error"]["code"] == -31044
    assert upstream.requests == []


async def test_an_unknown_method_needs_the_baseline_without_a_default(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    gw = await gateway(start_gateway_for, issuer, upstream.url, {"methods": {"x/vendor": ["v"]}})
    status, _, _ = await post(gw, request("x/other"), token_for(gw, issuer, ""))
    assert status == 403
    status, _, _ = await post(gw, request("x/other"), token_for(gw, issuer, "mcp:tools"))
    assert status == 200
    assert [json.loads(r.body)["method"] for r in upstream.requests] == ["x/other"]


async def test_a_listed_method_is_decided_by_its_rule(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    status, headers, answer = await post(
        gw, request("x/vendor", 8), token_for(gw, issuer, "mcp:tools files:read")
    )
    assert (status, answer["id"], answer["error"]["code"]) == (403, 8, -31043)
    challenge = dict(re.findall(r'(\w+)="([^"]*)"', headers["WWW-Authenticate"]))
    assert (challenge["error"], challenge["scope"]) == ("insufficient_scope", "vendor:use")
    assert upstream.requests == []

    status, _, answer = await post(gw, request("x/vendor", 9), token_for(gw, issuer, "vendor:use"))
    assert (status, answer["id"]) == (200, 9)
    assert [json.loads(r.body)["method"] for r in upstream.requests] == ["x/vendor"]

    status, headers, _ = await post(gw, request("x/off"), token_for(gw, issuer, "vendor:use"))
    assert status == 403
    assert "WWW-Authenticate" not in headers
    assert len(upstream.requests) == 1


async def test_mcp_methods_and_responses_keep_the_baseline(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    """`default: deny` does not touch what MCP defines: lists, pings, a client's response."""
    token = token_for(gw, issuer, "mcp:tools")
    bodies: list[object] = [
        request("ping"),
        request("tools/list"),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": "srv-1", "result": {"roots": []}},
    ]
    for body in bodies:
        status, _, _ = await post(gw, body, token)
        assert status in (200, 202)
    assert len(upstream.requests) == len(bodies)
    status, _, _ = await post(gw, request("ping"), token_for(gw, issuer, "files:read"))
    assert status == 403
    assert len(upstream.requests) == len(bodies)


CLI = [sys.executable, "-m", "gateway", "explain"]


def test_explain_names_the_deciding_rule(tmp_path: Path) -> None:
    files = {"name": "files", "route": "/files/mcp", "url": "http://127.0.0.1:1/mcp",
             "scopes": ["mcp:tools"],
             "policy": {"default": "deny", "methods": {"x/vendor": ["vendor:use"]}}}  # fmt: skip
    trusted = [{"name": "a", "issuer": "https://a.example"}]
    auth = {"resource_server": {"authorization_servers": trusted}}
    document = gateway_document(files, public_url="https://gw.example", auth=auth)
    path = write_yaml(tmp_path / "gw.yaml", document)

    def explain(method: str, scopes: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *CLI,
                "--config",
                str(path),
                "--route",
                "files",
                "--scopes",
                scopes,
                "--method",
                method,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    listed = explain("x/vendor", "mcp:tools")
    assert listed.returncode == 3
    assert "rule:     methods['x/vendor']: needs vendor:use" in listed.stdout
    assert "decision: insufficient_scope" in listed.stdout
    unknown = explain("x/other", "mcp:tools")
    assert "rule:     default: deny: denied whatever the scopes" in unknown.stdout
    mcp = explain("tools/list", "mcp:tools")
    assert mcp.returncode == 0
    assert "rule:     baseline scopes: needs mcp:tools" in mcp.stdout
    variant = explain("Tools/List", "mcp:tools")
    assert variant.returncode == 3
    assert "refused:  a look-alike of the MCP method 'tools/list' (400 method_variant)" in (
        variant.stdout
    )
