"""List visibility at the gateway in resource-server mode (tokens of another authorization
server): what lists show and annotate, by `list_visibility` and `attainable` rules, in JSON and
SSE list responses, page by page and on a resumed GET stream; protected resource metadata and
the 401 challenge of a route with a baseline and per-tool scopes."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.compiler import compile_config
from gateway.config import ConfigError, load_config
from gateway.oauth.users import hash_password
from gateway.policy.grants import ATTAINABLE_SCOPE_CLAIM, Grants, rule
from gateway.policy.scopes import ScopeImplications
from gateway.policy.visibility import REQUIRED_SCOPES_META, Ceilings
from tests.conftest import Gateway, StartGateway
from tests.support.configs import gateway_document, validated, write_yaml
from tests.support.http_upstream import RecordingUpstream, recording_upstream
from tests.support.local_issuer import LocalIssuer

ROUTE = "/files/mcp"
TOOLS = ["list_files", "read_file", "write_file", "share_file", "delete_file", "unlisted"]
POLICY: dict[str, Any] = {
    "tools": {
        "list_files": [],
        "read_file": ["files:read"],
        "write_file": ["files:write"],
        "share_file": ["files:share"],
        "delete_file": "deny",
    },
}
PAGE_SIZE = 3


def page(cursor: str | None) -> dict[str, Any]:
    """The upstream's tools/list result, PAGE_SIZE tools a page."""
    start = int(cursor or 0)
    result: dict[str, Any] = {"tools": [{"name": n} for n in TOOLS[start : start + PAGE_SIZE]]}
    if start + PAGE_SIZE < len(TOOLS):
        result["nextCursor"] = str(start + PAGE_SIZE)
    return result


async def lists(request: web.Request) -> web.StreamResponse:
    """JSON answers to POSTs (SSE when the request says `sse` in its id), and on GET an SSE
    stream replaying an earlier tools/list response (resumption)."""
    if request.method == "GET":
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        replayed = {"jsonrpc": "2.0", "id": 3, "result": page(None)}
        await resp.write(b"id: r1\ndata: " + json.dumps(replayed).encode() + b"\n\n")
        await resp.write_eof()
        return resp
    body = await request.json()
    params = body.get("params") or {}
    answer = {"jsonrpc": "2.0", "id": body["id"], "result": page(params.get("cursor"))}
    if isinstance(body["id"], str) and "sse" in body["id"]:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"event: message\ndata: " + json.dumps(answer).encode() + b"\n\n")
        await resp.write_eof()
        return resp
    return web.json_response(answer)


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    async with recording_upstream(lists) as recorded:
        yield recorded


async def route(start: StartGateway, issuer: LocalIssuer, url: str, **policy: Any) -> Gateway:
    return await start(
        {"name": "files", "route": ROUTE, "url": url, "scopes": ["files:read"],
         "policy": {**POLICY, **policy}},
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
    )  # fmt: skip


def shown(result: dict[str, Any]) -> dict[str, list[str] | None]:
    """Each listed tool -> the scopes it is annotated with (None: not annotated)."""
    return {
        tool["name"]: tool.get("_meta", {}).get(REQUIRED_SCOPES_META) for tool in result["tools"]
    }


async def tools_list(
    gw: Gateway, token: str, rpc_id: int | str = 1, cursor: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/list"}
    if cursor is not None:
        body["params"] = {"cursor": cursor}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url(ROUTE), json=body, headers=headers) as resp,
    ):
        assert resp.status == 200
        if resp.content_type == "text/event-stream":
            data = [
                line[6:] for line in (await resp.text()).splitlines() if line.startswith("data: ")
            ]
            message: dict[str, Any] = json.loads(data[-1])
        else:
            message = await resp.json()
    result: dict[str, Any] = message["result"]
    return result


async def every_page(gw: Gateway, token: str, rpc_id: int | str = 1) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    cursor = None
    for _ in range(len(TOOLS)):
        result = await tools_list(gw, token, rpc_id, cursor)
        seen |= shown(result)
        cursor = result.get("nextCursor")
        if cursor is None:
            return seen
    raise AssertionError("the pages never ended")


READER = {"list_files": None, "read_file": None}
"""What a caller holding files:read sees held (unlisted falls to the baseline, which it holds)."""


@pytest.mark.parametrize("rpc_id", [1, "sse-1"], ids=["json", "sse"])
async def test_without_attainable_rules_every_tool_not_denied_is_listed_and_annotated(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    rpc_id: int | str,
) -> None:
    gw = await route(start_gateway_for, issuer, upstream.url)
    token = issuer.mint(issuer.claims(gw.url(ROUTE), scope="files:read"))
    assert await every_page(gw, token, rpc_id) == READER | {
        "write_file": ["files:write"],
        "share_file": ["files:share"],
        "unlisted": None,
    }


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"groups": ["eng"]}, {"write_file": ["files:write"]}),
        ({"groups": ["eng", "sales"]},
         {"write_file": ["files:write"], "share_file": ["files:share"]}),
        ({"groups": ["ops"]}, {}),
        ({}, {}),
    ],
    ids=["eng", "eng-and-sales", "other-group", "no-claim"],
)  # fmt: skip
async def test_attainable_rules_list_only_what_the_tokens_claims_reach(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    claims: dict[str, Any],
    expected: dict[str, list[str]],
) -> None:
    gw = await route(
        start_gateway_for,
        issuer,
        upstream.url,
        attainable=[
            {"when": {"groups": ["eng"]}, "scopes": ["files:write"]},
            {"when": {"groups": ["sales"]}, "scopes": ["files:share"]},
        ],
    )
    token = issuer.mint(issuer.claims(gw.url(ROUTE), scope="files:read", **claims))
    assert await every_page(gw, token) == READER | {"unlisted": None} | expected


@pytest.mark.parametrize(
    ("visibility", "expected"),
    [
        ("held", READER | {"unlisted": None}),
        ("all", READER | {"write_file": ["files:write"], "share_file": ["files:share"],
                          "unlisted": None}),
    ],
)  # fmt: skip
async def test_held_and_all(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    visibility: str,
    expected: dict[str, Any],
) -> None:
    gw = await route(start_gateway_for, issuer, upstream.url, list_visibility=visibility)
    token = issuer.mint(issuer.claims(gw.url(ROUTE), scope="files:read"))
    assert await every_page(gw, token) == expected


async def test_each_page_is_filtered_and_keeps_its_cursor(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    gw = await route(start_gateway_for, issuer, upstream.url)
    token = issuer.mint(issuer.claims(gw.url(ROUTE), scope="files:read"))
    first = await tools_list(gw, token)
    second = await tools_list(gw, token, 2, first["nextCursor"])
    assert (first["nextCursor"], "nextCursor" in second) == ("3", False)
    assert shown(first) == READER | {"write_file": ["files:write"]}
    assert shown(second) == {"share_file": ["files:share"], "unlisted": None}


async def test_a_list_replayed_on_a_get_stream_is_filtered_and_annotated(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    gw = await route(start_gateway_for, issuer, upstream.url)
    token = issuer.mint(issuer.claims(gw.url(ROUTE), scope="files:read"))
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    async with aiohttp.ClientSession() as http, http.get(gw.url(ROUTE), headers=headers) as resp:
        assert resp.status == 200
        text = await resp.text()
    data = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert shown(json.loads(data[0])["result"]) == READER | {"write_file": ["files:write"]}


async def test_metadata_lists_every_scope_the_policy_can_require_and_401_asks_for_the_baseline(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    gw = await route(start_gateway_for, issuer, upstream.url)
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url("/.well-known/oauth-protected-resource" + ROUTE)) as resp:
            metadata = await resp.json()
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        async with http.post(gw.url(ROUTE), json=body) as resp:
            status, challenge = resp.status, resp.headers["WWW-Authenticate"]
    assert metadata["scopes_supported"] == ["files:read", "files:share", "files:write"]
    assert status == 401
    assert dict(re.findall(r'(\w+)="([^"]*)"', challenge))["scope"] == "files:read"


def test_ceilings_believe_the_claim_only_from_the_gateways_own_issuer() -> None:
    implies = ScopeImplications({"files:write": ["files:read"]})
    rules = Grants([rule({"groups": ["eng"]}, ["files:write"])], implies)
    ceilings = Ceilings("https://gw.example", rules, implies)
    carried = {ATTAINABLE_SCOPE_CLAIM: "files:write", "groups": ["sales"]}
    assert ceilings.of("https://gw.example", carried) == {"files:write", "files:read"}
    assert ceilings.of("https://gw.example", {"groups": ["eng"]}) == frozenset()
    assert ceilings.of("https://other.example", carried) == frozenset()
    assert ceilings.of("https://other.example", {"groups": ["eng"]}) == {
        "files:write",
        "files:read",
    }
    assert Ceilings(None, None, implies).of("https://other.example", carried) is None


def files_config(policy: dict[str, Any], auth: dict[str, Any]) -> dict[str, Any]:
    upstream = {"name": "files", "route": ROUTE, "url": "http://127.0.0.1:1/mcp", "policy": policy}
    return gateway_document(upstream, public_url="http://127.0.0.1:8080", auth=auth)


RESOURCE_SERVER = {
    "resource_server": {
        "authorization_servers": [
            {
                "name": "corp",
                "issuer": "https://corp.example",
                "jwks_uri": "https://corp.example/jwks",
            }
        ]
    }
}


def test_the_old_hide_unauthorized_key_says_what_replaces_it(tmp_path: Path) -> None:
    document = files_config({"hide_unauthorized": True}, RESOURCE_SERVER)
    with pytest.raises(ConfigError) as caught:
        load_config(write_yaml(tmp_path / "gateway.yaml", document))  # what a user sees
    [problem] = caught.value.problems
    assert "hide_unauthorized was replaced by list_visibility" in str(problem)
    assert "`held`" in str(problem)


def test_attainable_rules_with_another_visibility_are_refused() -> None:
    policy = {"list_visibility": "held", "attainable": [{"scopes": ["files:write"]}]}
    config = validated(files_config(policy, RESOURCE_SERVER))
    with pytest.raises(ConfigError) as caught:
        compile_config(config)
    assert "only with list_visibility: attainable" in str(caught.value.problems[0])


def test_attainable_rules_on_a_route_trusting_only_the_gateway_are_refused(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text('users:\n  demo: {password_hash: "' + hash_password("x" * 12) + '"}\n')
    facade = {"authorization_server": {"login": {"local": {"users_file": users}}}}
    config = validated(files_config({"attainable": [{"scopes": ["files:write"]}]}, facade))
    with pytest.raises(ConfigError) as caught:
        compile_config(config)
    assert "trusts only the gateway's own tokens" in str(caught.value.problems[0])
