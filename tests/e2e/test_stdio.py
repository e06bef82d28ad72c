"""Published stdio MCP servers from npm behind the gateway, one process per session: the
official `mcp` 2.x client (and raw clients for the isolation and crash cases) speak Streamable
HTTP to the gateway, which speaks newline-delimited JSON-RPC to each session's own process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp_types import CreateMessageRequestParams, CreateMessageResult, TextContent

from gateway.config.upstreams import SESSION_DIR
from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.crowd import Exchange, RawMcpClient
from tests.support.everything import ensure_everything_installed
from tests.support.local_issuer import LocalIssuer
from tests.support.node import NODE_MODULES, ensure_node_packages, node_executable
from tests.support.sdk_client import connect

EVERYTHING = "/everything/mcp"
MEMORY = "/memory/mcp"


def memory_entry() -> Path:
    ensure_node_packages()
    return NODE_MODULES / "@modelcontextprotocol" / "server-memory" / "dist" / "index.js"


def everything_upstream(**extra: Any) -> dict[str, Any]:
    return {
        "name": "everything",
        "route": EVERYTHING,
        "command": [node_executable(), str(ensure_everything_installed()), "stdio"],
        # Harmless: its gzip tool may fetch only from here (see FIELD-NOTES).
        "env": {"GZIP_ALLOWED_DOMAINS": "127.0.0.1"},
        **extra,
    }


def memory_upstream(**extra: Any) -> dict[str, Any]:
    return {
        "name": "memory",
        "route": MEMORY,
        "command": [node_executable(), str(memory_entry())],
        "private_dir": True,  # each process keeps its graph in its own directory
        "env": {"MEMORY_FILE_PATH": f"{SESSION_DIR}/memory.jsonl"},
        **extra,
    }


def results(exchange: Exchange) -> list[object]:
    return [summary[2] for summary in exchange.summaries() if summary[0] == "result"]


def structured(exchange: Exchange) -> Any:
    for message in exchange.messages:
        if "result" in message:
            return message["result"]
    raise AssertionError(f"no result in {exchange.messages}")


async def test_sdk_client_lists_calls_and_answers_a_sampling_request(
    start_gateway_for: StartGateway,
) -> None:
    gw = await start_gateway_for(everything_upstream())
    asked: list[str] = []

    async def sample(context: Any, params: CreateMessageRequestParams) -> CreateMessageResult:
        content = params.messages[0].content
        asked.append(content.text if isinstance(content, TextContent) else "")
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text="sampled!"), model="test"
        )

    # Default (auto) mode: the client probes 2026-07-28 first, gets 400, falls back.
    async with connect(gw.url(EVERYTHING), sampling_callback=sample) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert {"echo", "get-sum", "trigger-sampling-request"} <= tools
        echoed = await client.call_tool("echo", {"message": "through stdio"})
        assert echoed.content[0].text == "Echo: through stdio"  # type: ignore[union-attr]
        sampled = await client.call_tool("trigger-sampling-request", {"prompt": "hello"})
        text = sampled.content[0].text  # type: ignore[union-attr]
        assert "sampled!" in text  # the server got the client's answer to its request
        env = await client.call_tool("get-env", {})
        seen = json.loads(env.content[0].text)  # type: ignore[union-attr]
        assert seen == {"GZIP_ALLOWED_DOMAINS": "127.0.0.1"}  # nothing of the gateway's own
    assert asked == ["Resource trigger-sampling-request context: hello"]
    assert '"stdio_started"' in gateway_log()


async def test_a_modern_client_probe_is_told_to_initialize(
    start_gateway_for: StartGateway,
) -> None:
    gw = await start_gateway_for(everything_upstream())
    probe = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {}}
    headers = {"Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "server/discover"}  # fmt: skip
    async with httpx2.AsyncClient(timeout=10) as http:
        answer = await http.post(gw.url(EVERYTHING), json=probe, headers=headers)
    assert answer.status_code == 400
    assert answer.json()["error"]["data"]["reason"] == "session_required"
    assert '"stdio_started"' not in gateway_log()  # no process for a probe


async def secured_memory(start: StartGateway, issuer: LocalIssuer, **policy: Any) -> Gateway:
    return await start(
        memory_upstream(scopes=["mcp:tools"], **policy),
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
    )


async def test_sdk_client_uses_server_memory_with_a_bearer_token(
    start_gateway_for: StartGateway, issuer: LocalIssuer
) -> None:
    gw = await secured_memory(start_gateway_for, issuer)
    token = issuer.mint(issuer.claims(gw.url(MEMORY), scope="mcp:tools"))
    entity = {"name": "gateway", "entityType": "software", "observations": ["speaks stdio"]}
    async with connect(gw.url(MEMORY), headers={"Authorization": f"Bearer {token}"}) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert {"create_entities", "read_graph", "search_nodes"} <= tools
        await client.call_tool("create_entities", {"entities": [entity]})
        found = await client.call_tool("search_nodes", {"query": "stdio"})
        assert "gateway" in found.content[0].text  # type: ignore[union-attr]


async def test_two_principals_get_two_processes_and_cannot_see_each_others_state(
    start_gateway_for: StartGateway, issuer: LocalIssuer
) -> None:
    gw = await secured_memory(start_gateway_for, issuer)
    resource = gw.url(MEMORY)
    alice = issuer.mint(issuer.claims(resource, sub="alice", scope="mcp:tools"))
    bob = issuer.mint(issuer.claims(resource, sub="bob", scope="mcp:tools"))
    entity = {"name": "secret-project", "entityType": "project", "observations": ["alice only"]}
    async with (
        RawMcpClient(resource, alice, era="stateful") as first,
        RawMcpClient(resource, bob, era="stateful") as second,
    ):
        assert (await first.open(1))[0].status == 200
        assert (await second.open(1))[0].status == 200
        created = await first.call_tool(2, "create_entities", {"entities": [entity]})
        assert created.status == 200
        graph = await second.call_tool(2, "read_graph", {})
        assert "secret-project" not in json.dumps(structured(graph))
        own = await first.call_tool(3, "read_graph", {})
        assert "secret-project" in json.dumps(structured(own))
        # Bob may not use Alice's session either: the same 404 as any unknown session.
        second.session_id = first.session_id
        stolen = await second.call_tool(3, "read_graph", {})
        assert stolen.status == 404
    started = [line for line in gateway_log().splitlines() if '"stdio_started"' in line]
    assert len({json.loads(line)["pid"] for line in started}) == 2
    assert '"upstream_stderr"' in gateway_log()  # what the servers said on stderr, logged


async def test_processes_per_principal_are_limited(
    start_gateway_for: StartGateway, issuer: LocalIssuer
) -> None:
    gw = await secured_memory(start_gateway_for, issuer, max_processes_per_principal=1)
    resource = gw.url(MEMORY)
    token = issuer.mint(issuer.claims(resource, scope="mcp:tools"))
    async with (
        RawMcpClient(resource, token, era="stateful") as first,
        RawMcpClient(resource, token, era="stateful") as second,
    ):
        assert (await first.open(1))[0].status == 200
        refused = (await second.open(1))[0]
        assert refused.status == 429
        assert len(stdio_pids()) == 1


async def test_a_crashed_process_gives_404_then_a_fresh_session_works_and_nothing_is_left(
    start_gateway_for: StartGateway, issuer: LocalIssuer
) -> None:
    gw = await secured_memory(start_gateway_for, issuer)
    resource = gw.url(MEMORY)
    token = issuer.mint(issuer.claims(resource, scope="mcp:tools"))
    async with RawMcpClient(resource, token, era="stateful") as client:
        await client.open(1)
        assert (await client.call_tool(2, "read_graph", {})).status == 200
        pids = stdio_pids()
        assert len(pids) == 1
        os.kill(pids[0], signal.SIGKILL)  # the server crashes mid-session
        await wait_until_exited(pids[0])
        after = await client.call_tool(3, "read_graph", {})
        assert after.status == 404  # the client re-initializes on a 404
        client.session_id = None
        await client.open(4)
        assert (await client.call_tool(5, "read_graph", {})).status == 200
        live = stdio_pids()
        assert len(live) == 1
        assert live != pids
    await gw.running.stop()
    for pid in live:
        assert not alive(pid)  # stopped with the gateway: no orphans


async def test_policy_filtered_lists_and_step_up_work_as_for_http_upstreams(
    start_gateway_for: StartGateway, issuer: LocalIssuer
) -> None:
    policy = {"tools": {"read_graph": ["mcp:tools"], "create_entities": ["memory:write"]},
              "default": "deny", "list_visibility": "held"}  # fmt: skip
    gw = await secured_memory(start_gateway_for, issuer, policy=policy)
    resource = gw.url(MEMORY)
    reader = issuer.mint(issuer.claims(resource, scope="mcp:tools"))
    async with RawMcpClient(resource, reader, era="stateful") as client:
        await client.open(1)
        listed = await client.post({"id": 2, "method": "tools/list", "params": {}})
        names = {tool["name"] for tool in structured(listed)["tools"]}
        assert names == {"read_graph"}  # everything else hidden (denied or out of scope)
        refused = await client.call_tool(3, "create_entities", {"entities": []})
        assert refused.status == 403
        assert refused.messages[0]["error"]["data"]["reason"] == "insufficient_scope"
        denied = await client.call_tool(4, "delete_entities", {"entityNames": ["x"]})
        assert denied.status == 403
        assert denied.messages[0]["error"]["data"]["reason"] == "forbidden"
    writer = issuer.mint(issuer.claims(resource, scope="mcp:tools memory:write"))
    async with RawMcpClient(resource, writer, era="stateful") as client:  # after the step-up
        await client.open(1)
        entity = {"name": "n", "entityType": "t", "observations": []}
        created = await client.call_tool(2, "create_entities", {"entities": [entity]})
        assert created.status == 200
        assert "error" not in created.messages[-1]


def stdio_pids() -> list[int]:
    """Pids of stdio processes started and not yet reported exited, from the gateway log."""
    started, exited = [], set()
    for line in gateway_log().splitlines():
        if '"stdio_started"' in line:
            started.append(json.loads(line)["pid"])
        elif '"stdio_exited"' in line:
            exited.add(json.loads(line)["pid"])
    return [pid for pid in started if pid not in exited]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_until_exited(pid: int) -> None:
    for _ in range(200):
        if pid not in stdio_pids():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"process {pid} still reported running")


@pytest.fixture(autouse=True)
def _node_packages() -> None:
    ensure_node_packages()


async def test_an_idle_session_is_reaped_and_its_process_stopped(
    start_gateway_for: StartGateway,
) -> None:
    gw = await start_gateway_for(memory_upstream(), sessions={"idle_timeout": 1})
    async with RawMcpClient(gw.url(MEMORY), "anonymous", era="stateful") as client:
        await client.open(1)
        [pid] = stdio_pids()
        await wait_until_exited(pid)  # nobody used it for a second: reaped, process stopped
        assert not alive(pid)
        assert (await client.call_tool(2, "read_graph", {})).status == 404
    assert '"session_reaped"' in gateway_log()
