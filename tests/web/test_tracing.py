"""Tracing on a real gateway (both data planes): the spans a real OTLP/HTTP receiver gets, how
they link the client, the gateway and an HTTP upstream that records the `traceparent` it
received, what they never carry, and the trace ids in the access line; tracing off leaves the
client's trace context to pass through as before."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.http_upstream import RecordingUpstream, recording_upstream
from tests.support.local_issuer import LocalIssuer
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support.processes import free_port
from tests.support.secrets import remember

SERVER, CLIENT = 2, 3  # OTLP span kinds
ERROR = 2  # OTLP status code
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
PLANES = ["lean", "aiohttp"]


async def echo(request: web.Request) -> web.StreamResponse:
    return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {"content": []}})


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    async with recording_upstream(echo) as recorded:
        yield recorded


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    async with otlp_receiver() as running:
        yield running


def tracing(receiver: OtlpReceiver, **extra: Any) -> dict[str, Any]:
    """Tracing on, exporting to `receiver` soon after each span ends."""
    return {"enabled": True, "endpoint": receiver.url, "schedule_delay": 0.05, **extra}


async def protected_gateway(
    start: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream, plane: str, **kw: Any
) -> Gateway:
    return await start(
        {"name": "files", "route": "/files/mcp", "url": upstream.url, "scopes": ["mcp:tools"],
         "policy": {"tools": {"echo": ["files:read"], "wipe": "deny"}}},
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
        server={"data_plane": plane},
        **kw,
    )  # fmt: skip


def call(tool: str, argument: str) -> dict[str, Any]:
    params = {"name": tool, "arguments": {"text": argument}}
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}


async def post(gw: Gateway, token: str, body: dict[str, Any], **headers: str) -> int:
    sent = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Mcp-Method": body["method"],
        "Mcp-Name": body["params"]["name"],
        **headers,
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url("/files/mcp"), json=body, headers=sent) as resp,
    ):
        await resp.read()
        return resp.status


async def ping(gw: Gateway, **headers: str) -> int:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url("/files/mcp"), json=body, headers=headers) as resp,
    ):
        return resp.status


def access_lines() -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in gateway_log().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "request_completed"]


def children_of(parent: ReceivedSpan, spans: list[ReceivedSpan]) -> set[str]:
    return {s.name for s in spans if s.parent_span_id == parent.span_id}


@pytest.mark.parametrize("plane", PLANES)
async def test_a_trusted_clients_trace_runs_through_the_gateway_to_the_upstream(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    receiver: OtlpReceiver,
    plane: str,
) -> None:
    argument = remember("argument-" + secrets.token_hex(12))
    collector_key = remember("collector-" + secrets.token_hex(12))
    gw = await protected_gateway(
        start_gateway_for, issuer, upstream, plane,
        tracing=tracing(receiver, trusted_clients=["127.0.0.0/8"], service_name="gw-test",
                        headers={"X-Collector-Key": collector_key}),
    )  # fmt: skip
    token = issuer.mint(issuer.claims(gw.url("/files/mcp")))
    status = await post(gw, token, call("echo", argument), traceparent=TRACEPARENT,
                        tracestate="vendor=abc")  # fmt: skip
    assert status == 200
    spans = await receiver.wait_for(4)

    server = receiver.one("POST /files/mcp")
    assert (server.kind, server.trace_id, server.parent_span_id) == (
        SERVER, CLIENT_TRACE, CLIENT_SPAN)  # fmt: skip
    assert children_of(server, spans) == {"authenticate", "policy", "POST"}
    assert {s.trace_id for s in spans} == {CLIENT_TRACE}
    assert server.service_name == "gw-test"
    assert server.attributes == {
        "http.request.method": "POST",
        "http.route": "/files/mcp",
        "gateway.route": "files",
        "http.response.status_code": 200,
        "mcp.method.name": "tools/call",
        "gen_ai.tool.name": "echo",
        "gateway.decision": "allow",
    }
    assert receiver.one("policy").attributes == {"gateway.decision": "allow"}
    exchange = receiver.one("POST")
    assert exchange.kind == CLIENT
    assert exchange.attributes["http.response.status_code"] == 200
    # The upstream's parent is the gateway's client span; the client's tracestate goes along.
    received = upstream.requests[0].header_list
    assert [v for k, v in received if k.lower() == "traceparent"] == [
        f"00-{CLIENT_TRACE}-{exchange.span_id}-01"
    ]
    assert [v for k, v in received if k.lower() == "tracestate"] == ["vendor=abc"]
    # Nothing that left for the collector holds the token or an argument value.
    exported = b"".join(receiver.bodies)
    assert token.encode() not in exported
    assert argument.encode() not in exported
    assert receiver.headers[0]["x-collector-key"] == collector_key
    line = access_lines()[-1]
    assert (line["trace_id"], line["span_id"]) == (CLIENT_TRACE, server.span_id)


@pytest.mark.parametrize("plane", PLANES)
async def test_an_untrusted_clients_trace_context_starts_a_new_trace_and_goes_nowhere(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    receiver: OtlpReceiver,
    plane: str,
) -> None:
    gw = await protected_gateway(
        start_gateway_for, issuer, upstream, plane,
        tracing=tracing(receiver, trusted_clients=["10.0.0.0/8"]),
    )  # fmt: skip
    token = issuer.mint(issuer.claims(gw.url("/files/mcp")))
    body = call("echo", "x")
    body["params"]["_meta"] = {"traceparent": TRACEPARENT, "progressToken": 5}
    status = await post(gw, token, body, traceparent=TRACEPARENT, tracestate="vendor=abc")
    assert status == 200
    spans = await receiver.wait_for(4)
    server = receiver.one("POST /files/mcp")
    assert server.parent_span_id == ""
    assert server.trace_id != CLIENT_TRACE
    assert {s.trace_id for s in spans} == {server.trace_id}
    received = dict((k.lower(), v) for k, v in upstream.requests[0].header_list)
    parent = f"00-{server.trace_id}-{receiver.one('POST').span_id}-"
    assert received["traceparent"].startswith(parent)  # flags: sampled (and random, level 2)
    assert "tracestate" not in received
    # The trace context reserved in `_meta` is the gateway's too; the rest of it is kept.
    forwarded = json.loads(upstream.requests[0].body)
    assert forwarded["params"]["_meta"] == {"traceparent": received["traceparent"],
                                            "progressToken": 5}  # fmt: skip
    assert forwarded["params"]["arguments"] == {"text": "x"}
    assert CLIENT_TRACE not in gateway_log()


@pytest.mark.parametrize("plane", PLANES)
async def test_refusals_and_upstream_failures_are_span_statuses_with_codes_only(
    start_gateway_for: StartGateway, issuer: LocalIssuer, receiver: OtlpReceiver, plane: str
) -> None:
    down = {
        "name": "files",
        "route": "/files/mcp",
        "url": f"http://127.0.0.1:{free_port()}/mcp",
        "scopes": ["mcp:tools"],
        "policy": {"tools": {"echo": ["files:read"], "wipe": "deny"}},
    }
    gw = await start_gateway_for(
        down, auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
        server={"data_plane": plane}, tracing=tracing(receiver, trusted_clients="all"),
    )  # fmt: skip
    token = issuer.mint(issuer.claims(gw.url("/files/mcp")))
    forged = remember("forged-" + secrets.token_hex(16))
    assert await post(gw, forged, call("echo", "x")) == 401
    assert await post(gw, token, call("wipe", "x")) == 403
    assert await post(gw, token, call("echo", "x")) == 502
    spans = await receiver.wait_for(2 + 3 + 4)
    failures = {(s.name, s.attributes.get("error.type")) for s in spans if s.status_code == ERROR}
    assert failures == {
        ("authenticate", "invalid_token"),
        ("policy", "forbidden"),
        ("POST", "upstream_unavailable"),
        ("POST /files/mcp", "502"),
    }
    assert forged.encode() not in b"".join(receiver.bodies)


@pytest.mark.parametrize("plane", PLANES)
async def test_tracing_off_passes_the_clients_trace_context_through_and_exports_nothing(
    start_gateway_for: StartGateway,
    upstream: RecordingUpstream,
    receiver: OtlpReceiver,
    plane: str,
) -> None:
    gw = await start_gateway_for(
        {"name": "files", "route": "/files/mcp", "url": upstream.url},
        server={"data_plane": plane},
        tracing={"enabled": False, "endpoint": receiver.url, "trusted_clients": "all"},
    )
    async with aiohttp.ClientSession() as http:
        headers = {"traceparent": TRACEPARENT, "tracestate": "vendor=abc",
                   "Accept": "application/json, text/event-stream"}  # fmt: skip
        body = b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"_meta": ' + (
            b'{"traceparent": "%s"}}}' % TRACEPARENT.encode()
        )
        headers["Content-Type"] = "application/json"
        async with http.post(gw.url("/files/mcp"), data=body, headers=headers) as resp:
            assert resp.status == 200
    await gw.running.stop()  # a gateway tracing would export its last spans now
    assert upstream.requests[0].body == body  # byte for byte
    received = [(k.lower(), v) for k, v in upstream.requests[0].header_list]
    assert [(k, v) for k, v in received if k in ("traceparent", "tracestate")] == [
        ("traceparent", TRACEPARENT),
        ("tracestate", "vendor=abc"),
    ]
    assert receiver.bodies == []
    line = access_lines()[-1]
    assert "trace_id" not in line
    assert "span_id" not in line


async def test_a_collector_that_is_down_fails_no_request_and_is_warned_about_once(
    start_gateway_for: StartGateway, upstream: RecordingUpstream
) -> None:
    gw = await start_gateway_for(
        {"name": "files", "route": "/files/mcp", "url": upstream.url},
        tracing={"enabled": True, "endpoint": f"http://127.0.0.1:{free_port()}/v1/traces",
                 "schedule_delay": 0.05, "export_timeout": 1, "shutdown_timeout": 2},
    )  # fmt: skip
    for _ in range(5):
        assert await ping(gw) == 200
    await gw.running.stop()  # bounded by shutdown_timeout, with the collector down
    warnings = [line for line in gateway_log().splitlines() if "trace_export_failed" in line]
    assert len(warnings) == 1
    assert json.loads(warnings[0])["level"] == "warning"
    assert len(access_lines()) == 5


async def test_shutdown_exports_the_spans_that_waited_for_their_batch(
    start_gateway_for: StartGateway, upstream: RecordingUpstream, receiver: OtlpReceiver
) -> None:
    gw = await start_gateway_for(
        {"name": "files", "route": "/files/mcp", "url": upstream.url},
        tracing={"enabled": True, "endpoint": receiver.url, "schedule_delay": 60},
    )
    assert await ping(gw) == 200
    assert receiver.spans == []  # the batch waits a minute...
    await gw.running.stop()  # ...or for shutdown
    assert [s.name for s in receiver.spans] == ["POST", "POST /files/mcp"]


@pytest.mark.parametrize(
    ("flags", "exported"),
    [pytest.param("01", True, id="client-sampled"), pytest.param("00", False, id="client-not")],
)
async def test_a_trusted_clients_sampling_decision_is_followed(
    start_gateway_for: StartGateway,
    upstream: RecordingUpstream,
    receiver: OtlpReceiver,
    flags: str,
    exported: bool,
) -> None:
    gw = await start_gateway_for(
        {"name": "files", "route": "/files/mcp", "url": upstream.url},
        tracing=tracing(receiver, trusted_clients="all", sample_ratio=0.0 if exported else 1.0),
    )
    assert await ping(gw, traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-{flags}") == 200
    await gw.running.stop()
    assert bool(receiver.spans) is exported
    # Recorded or not, the upstream continues the same trace with the same decision.
    sent = upstream.requests[0].headers["traceparent"]
    assert sent.startswith(f"00-{CLIENT_TRACE}-")
    assert sent.endswith(f"-{flags}")
    assert CLIENT_SPAN not in sent
    assert access_lines()[-1]["trace_id"] == CLIENT_TRACE


@pytest.mark.parametrize("plane", PLANES)
async def test_a_trusted_clients_trace_context_in_meta_is_continued(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    receiver: OtlpReceiver,
    plane: str,
) -> None:
    """Where MCP clients (the `mcp` SDK among them) put it: `params._meta.traceparent`."""
    gw = await protected_gateway(
        start_gateway_for, issuer, upstream, plane, tracing=tracing(receiver, trusted_clients="all")
    )
    token = issuer.mint(issuer.claims(gw.url("/files/mcp")))
    body = call("echo", "x")
    body["params"]["_meta"] = {"traceparent": TRACEPARENT}
    assert await post(gw, token, body) == 200
    spans = await receiver.wait_for(4)
    server = receiver.one("POST /files/mcp")
    assert (server.trace_id, server.parent_span_id) == (CLIENT_TRACE, CLIENT_SPAN)
    assert children_of(server, spans) == {"authenticate", "policy", "POST"}
    exchange = receiver.one("POST")
    forwarded = json.loads(upstream.requests[0].body)
    assert forwarded["params"]["_meta"] == {
        "traceparent": f"00-{CLIENT_TRACE}-{exchange.span_id}-01"
    }
    assert (
        upstream.requests[0].headers["traceparent"] == forwarded["params"]["_meta"]["traceparent"]
    )
