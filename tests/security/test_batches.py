"""A JSON-RPC batch never shows more than its calls would alone.

Batches exist at protocol version 2025-03-26, which is also what a request without
`MCP-Protocol-Version` is taken to speak. Every list call in a batch (`tools/list`,
`resources/list`, `resources/templates/list`, `prompts/list`) is filtered exactly like a single
one, whether the upstream answers with a JSON array, one SSE event holding the array, or one event
per response; a batch whose requests share an id is refused, since its responses could not be
attributed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.listing import (
    LIST_FIELDS,
    Allowed,
    ListFilter,
    SseListFilter,
    filter_json_body,
    filter_message,
)
from gateway.policy.visibility import REQUIRED_SCOPES_META
from tests.conftest import Gateway, StartGateway
from tests.support.everything import ensure_everything_installed, everything_server
from tests.support.http_upstream import RecordingUpstream, recording_upstream
from tests.support.local_issuer import LocalIssuer
from tests.support.node import node_executable
from tests.support.processes import HttpServerProcess

LIST_METHODS = list(LIST_FIELDS)
BATCH_VERSION = {"MCP-Protocol-Version": "2025-03-26"}
ACCEPT = {"Accept": "application/json, text/event-stream"}

# --- the invariant, over random batches (pure) ------------------------------------------------

NAMES = ["a", "b", "c", "d", "e"]


SHOWN = [None, frozenset(), frozenset({"s:w"})]
"""How an entry may be shown: hidden, held, or annotated as needing s:w."""


def visible_for(kind_visible: dict[str, dict[str, frozenset[str] | None]], method: str) -> Allowed:
    return lambda name: kind_visible[method].get(name)


@st.composite
def batches(draw: st.DrawFn) -> tuple[ListFilter, list[dict[str, Any]]]:
    """List calls with unique ids, what each kind may show, and the upstream's responses to
    them (in any order, with responses to other calls and notifications among them)."""
    ids = draw(
        st.lists(
            st.one_of(st.integers(-3, 40), st.text("xyz1", min_size=1, max_size=3)),
            min_size=1,
            max_size=7,
            unique_by=lambda v: (type(v), v),
        )
    )
    n_lists = draw(st.integers(1, len(ids)))
    kind_visible = {
        m: draw(st.dictionaries(st.sampled_from(NAMES), st.sampled_from(SHOWN)))
        for m in LIST_METHODS
    }
    calls: dict[str | int, tuple[str, Allowed]] = {}
    for rpc_id in ids[:n_lists]:
        method = draw(st.sampled_from(LIST_METHODS))
        calls[rpc_id] = (method, visible_for(kind_visible, method))
    messages: list[dict[str, Any]] = []
    for rpc_id in ids:
        # What the upstream answers: usually the list the call asked for; sometimes another
        # list's shape, an error, or a result of a non-list call that looks like a list.
        method = calls[rpc_id][0] if rpc_id in calls else draw(st.sampled_from(LIST_METHODS))
        if draw(st.integers(0, 9)) == 0:
            method = draw(st.sampled_from(LIST_METHODS))
        array_key, item_key = LIST_FIELDS[method]
        items = [{item_key: name} for name in draw(st.lists(st.sampled_from(NAMES), max_size=6))]
        result: dict[str, Any] = {array_key: items}
        if draw(st.booleans()):
            result["nextCursor"] = "next"
        messages.append({"jsonrpc": "2.0", "id": rpc_id, "result": result})
    for _ in range(draw(st.integers(0, 2))):
        messages.append({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}})
    return ListFilter(calls=calls), draw(st.permutations(messages))


def sse_events(payloads: list[object], newline: bytes) -> bytes:
    return b"".join(
        b"event: message" + newline + b"data: " + json.dumps(p).encode() + newline * 2
        for p in payloads
    )


def sse_payloads(body: bytes) -> list[Any]:
    """The JSON data of every event with data (a priming event has none)."""
    text = body.decode().replace("\r\n", "\n")
    datas = [
        "\n".join(line[6:] for line in event.split("\n") if line.startswith("data: "))
        for event in text.split("\n\n")
    ]
    return [json.loads(data) for data in datas if data.strip()]


def flatten(payloads: list[Any]) -> list[Any]:
    return [m for p in payloads for m in (p if isinstance(p, list) else [p])]


@settings(max_examples=1000, deadline=None)
@given(
    batch=batches(),
    shape=st.sampled_from(["json", "sse-array", "sse-events"]),
    newline=st.sampled_from([b"\n", b"\r\n"]),
    chunk=st.integers(1, 64),
)
def test_a_batch_never_shows_an_item_a_single_call_would_hide(
    batch: tuple[ListFilter, list[dict[str, Any]]],
    shape: Literal["json", "sse-array", "sse-events"],
    newline: bytes,
    chunk: int,
) -> None:
    lists, messages = batch
    if shape == "json":
        body = json.dumps(messages if len(messages) != 1 else messages[0]).encode()
        seen = json.loads(filter_json_body(lists, body))
        out = seen if isinstance(seen, list) else [seen]
    else:
        payloads: list[object] = [messages] if shape == "sse-array" else list(messages)
        stream = sse_events(payloads, newline)
        sse = SseListFilter(lists)
        filtered = b"".join(sse.feed(stream[i : i + chunk]) for i in range(0, len(stream), chunk))
        out = flatten(sse_payloads(filtered + sse.finish()))
    # Message for message, the batch reads exactly as each response would alone.
    assert len(out) == len(messages)
    for before, after in zip(messages, out, strict=True):
        rpc_id = before.get("id")
        call = lists.calls.get(rpc_id) if isinstance(rpc_id, str | int) else None
        alone = filter_message(ListFilter({rpc_id: call}), before) if call is not None else None
        assert after == (alone if alone is not None else before)
        if call is not None and alone is not None:
            method, allowed = call
            array_key, item_key = LIST_FIELDS[method]
            for item in after["result"][array_key]:
                needs = allowed(item[item_key])
                assert needs is not None
                assert item.get("_meta", {}).get(REQUIRED_SCOPES_META) == (
                    sorted(needs) if needs else None
                )


# --- through the gateway, against a programmable upstream -------------------------------------

# Each list holds one item the caller may use ("ok..."), one it could be granted and sees
# annotated ("up...", needing s:w), and one denied ("no...").
ITEMS = {
    "tools/list": ["ok_tool", "up_tool", "no_tool"],
    "resources/list": ["file:///ok/a", "file:///up/c", "file:///no/b"],
    "resources/templates/list": ["file:///ok/{x}", "file:///up/{z}", "file:///no/{y}"],
    "prompts/list": ["ok_prompt", "up_prompt", "no_prompt"],
}
POLICY = {
    "default": "deny",
    "tools": {"ok_*": [], "up_*": ["s:w"]},
    "resources": {"file:///ok/*": [], "file:///up/*": ["s:w"]},
    "prompts": {"ok_*": [], "up_*": ["s:w"]},
}
SHOWN_BY_GATEWAY = {method: [ok, f"{up} needs s:w"] for method, (ok, up, _) in ITEMS.items()}


def answer(message: dict[str, Any]) -> dict[str, Any] | None:
    if "id" not in message:
        return None
    method = message["method"]
    if method not in ITEMS:
        return {"jsonrpc": "2.0", "id": message["id"], "result": {}}
    array_key, item_key = LIST_FIELDS[method]
    items = [{item_key: name} for name in ITEMS[method]]
    return {"jsonrpc": "2.0", "id": message["id"], "result": {array_key: items}}


Shape = Literal["json", "sse-array", "sse-events"]


def lists_upstream(shape: Shape) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        batch = body if isinstance(body, list) else [body]
        answers = [a for m in batch if (a := answer(m)) is not None]
        if not answers:
            return web.Response(status=202)
        payload: object = answers if isinstance(body, list) else answers[0]
        if shape == "json":
            return web.json_response(payload)
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        events = [payload] if shape == "sse-array" else answers
        for event in events:
            await stream.write(b"event: message\ndata: " + json.dumps(event).encode() + b"\n\n")
        await stream.write_eof()
        return stream

    return handler


@pytest.fixture(params=["json", "sse-array", "sse-events"])
async def upstream(request: pytest.FixtureRequest) -> AsyncIterator[RecordingUpstream]:
    async with recording_upstream(lists_upstream(request.param)) as recorded:
        yield recorded


@pytest.fixture
async def gw(
    start_gateway_for: StartGateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> Gateway:
    return await start_gateway_for(
        {"name": "up", "route": "/up/mcp", "url": upstream.url, "policy": POLICY},
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
    )


async def post(
    gw: Gateway, issuer: LocalIssuer, body: object, headers: dict[str, str] | None = None
) -> tuple[int, list[Any]]:
    token = issuer.mint(issuer.claims(gw.url("/up/mcp")))
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gw.url("/up/mcp"),
            data=json.dumps(body),
            headers={"Authorization": f"Bearer {token}", **ACCEPT, **(headers or {})},
        ) as resp,
    ):
        raw = await resp.read()
        if resp.content_type == "text/event-stream":
            return resp.status, flatten(sse_payloads(raw))
        value = json.loads(raw)
        return resp.status, value if isinstance(value, list) else [value]


def listed(messages: list[Any]) -> dict[object, list[str]]:
    """Each response's list items by id, each with the scopes it is annotated with."""
    out: dict[object, list[str]] = {}
    for message in messages:
        for method, (array_key, item_key) in LIST_FIELDS.items():
            items = message.get("result", {}).get(array_key)
            if items is not None and method in ITEMS:
                out[message["id"]] = [_shown(item, item_key) for item in items]
    return out


def _shown(item: dict[str, Any], item_key: str) -> str:
    needs = item.get("_meta", {}).get(REQUIRED_SCOPES_META)
    return item[item_key] if needs is None else f"{item[item_key]} needs {' '.join(needs)}"


def call(method: str, rpc_id: object) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": method}


@pytest.mark.parametrize("method", LIST_METHODS)
@pytest.mark.parametrize(
    "headers", [{}, BATCH_VERSION], ids=["no-version-header", "version-2025-03-26"]
)
async def test_a_one_element_batch_is_filtered_like_a_single_call(
    gw: Gateway, issuer: LocalIssuer, method: str, headers: dict[str, str]
) -> None:
    status, single = await post(gw, issuer, call(method, 1), headers)
    assert status == 200
    status, batched = await post(gw, issuer, [call(method, 1)], headers)
    assert status == 200
    assert listed(batched) == listed(single) == {1: SHOWN_BY_GATEWAY[method]}


async def test_every_list_call_of_a_batch_is_filtered(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    batch = [
        call("tools/list", 1),
        call("resources/list", "r"),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        call("resources/templates/list", 3),
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "ok_tool"}},
        call("prompts/list", "p"),
        call("tools/list", 6),
    ]
    status, messages = await post(gw, issuer, batch)
    assert status == 200
    assert len(upstream.requests) == 1
    assert listed(messages) == {
        1: SHOWN_BY_GATEWAY["tools/list"],
        "r": SHOWN_BY_GATEWAY["resources/list"],
        3: SHOWN_BY_GATEWAY["resources/templates/list"],
        "p": SHOWN_BY_GATEWAY["prompts/list"],
        6: SHOWN_BY_GATEWAY["tools/list"],
    }
    assert {m["id"] for m in messages} == {1, "r", 3, 4, "p", 6}


@pytest.mark.parametrize(
    "batch",
    [
        [call("tools/list", 1), call("tools/list", 1)],
        [call("tools/list", 1), call("prompts/list", 1)],
        [call("tools/list", "a"), call("ping", "a")],
        [call("ping", 7), call("ping", 7)],
    ],
    ids=["same-list-twice", "two-lists", "list-and-other", "no-list"],
)
async def test_requests_sharing_an_id_are_refused_before_forwarding(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream, batch: list[Any]
) -> None:
    status, [error] = await post(gw, issuer, batch)
    assert status == 400
    assert (error["error"]["code"], error["error"]["data"]["reason"]) == (-32600, "duplicate_id")
    assert upstream.requests == []


async def test_ids_that_differ_by_type_are_distinct(
    gw: Gateway, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    status, messages = await post(gw, issuer, [call("tools/list", 1), call("prompts/list", "1")])
    assert status == 200
    assert listed(messages) == {
        1: SHOWN_BY_GATEWAY["tools/list"],
        "1": SHOWN_BY_GATEWAY["prompts/list"],
    }


# --- through the gateway, against server-everything -------------------------------------------


@pytest.fixture(scope="module")
def everything() -> Iterator[HttpServerProcess]:
    with everything_server() as server:
        yield server


async def session_batch(
    url: str, batch: list[Any], headers: dict[str, str]
) -> tuple[int, list[Any]]:
    """Initialize a session at 2025-03-26, then send `batch` in it."""
    base = {**ACCEPT, "Content-Type": "application/json", **headers}
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-03-26",
            "capabilities": {},
            "clientInfo": {"name": "batch-test", "version": "1"},
        },
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=json.dumps(init), headers=base) as resp:
            assert resp.status == 200
            session = {"Mcp-Session-Id": resp.headers["Mcp-Session-Id"], **BATCH_VERSION}
            await resp.read()
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with http.post(
            url, data=json.dumps(initialized), headers={**base, **session}
        ) as resp:
            assert resp.status == 202
        async with http.post(url, data=json.dumps(batch), headers={**base, **session}) as resp:
            raw = await resp.read()
            if resp.content_type == "text/event-stream":
                return resp.status, flatten(sse_payloads(raw))
            return resp.status, flatten([json.loads(raw)])


def items_by_id(messages: list[Any]) -> dict[object, list[str]]:
    out: dict[object, list[str]] = {}
    for message in messages:
        for array_key, item_key in LIST_FIELDS.values():
            items = message.get("result", {}).get(array_key)
            if isinstance(items, list):
                out[message["id"]] = [item[item_key] for item in items]
    return out


async def test_server_everything_batch_lists_are_filtered(
    start_gateway_for: StartGateway, issuer: LocalIssuer, everything: HttpServerProcess
) -> None:
    batch = [call(method, i) for i, method in enumerate(LIST_METHODS, 1)]
    status, direct_messages = await session_batch(everything.url, batch, {})
    assert status == 200
    direct = items_by_id(direct_messages)
    assert all(len(direct[i]) >= 2 for i in range(1, 5)), direct  # something to hide in each
    # Hide the first item of every list by its exact name.
    hidden = {i: direct[i][0] for i in range(1, 5)}
    gw = await start_gateway_for(
        {
            "name": "ev",
            "route": "/ev/mcp",
            "url": everything.url,
            "policy": {
                "tools": {hidden[1]: "deny"},
                "resources": {hidden[2]: "deny", hidden[3]: "deny"},
                "prompts": {hidden[4]: "deny"},
            },
        },
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
    )
    token = issuer.mint(issuer.claims(gw.url("/ev/mcp"), scope="mcp:tools"))
    auth = {"Authorization": f"Bearer {token}"}
    status, through_messages = await session_batch(gw.url("/ev/mcp"), batch, auth)
    assert status == 200
    through = items_by_id(through_messages)
    assert through == {i: [n for n in direct[i] if n != hidden[i]] for i in range(1, 5)}
    status, single_messages = await session_batch(gw.url("/ev/mcp"), [batch[0]], auth)
    assert status == 200
    assert items_by_id(single_messages) == {1: through[1]}


# --- stdio routes: one process per session, no batching ---------------------------------------


async def test_a_stdio_route_refuses_a_batch_with_400(start_gateway_for: StartGateway) -> None:
    """Its processes take one message at a time: a batch is refused, never half-handled."""
    gw = await start_gateway_for(
        {
            "name": "stdio",
            "route": "/stdio/mcp",
            "command": [node_executable(), str(ensure_everything_installed()), "stdio"],
        }
    )
    for batch in (
        [call("tools/list", 1)],
        [{"jsonrpc": "2.0", "id": "srv-1", "result": {}}],
        [{"jsonrpc": "2.0", "method": "notifications/initialized"}],
    ):
        status, messages = await session_batch(gw.url("/stdio/mcp"), batch, {})
        assert status == 400
        assert messages[0]["error"]["code"] == -32600


# --- resumption: a GET stream with Last-Event-ID replays earlier responses --------------------


async def test_a_resumed_stream_replays_a_list_response_filtered(
    start_gateway_for: StartGateway, issuer: LocalIssuer, everything: HttpServerProcess
) -> None:
    """server-everything stores its events and replays them on `GET` with `Last-Event-ID`
    (Streamable HTTP, "Resumability and Redelivery"), list responses included: those are
    filtered on the GET stream as on the POST stream that first carried them."""
    gw = await start_gateway_for(
        {
            "name": "ev",
            "route": "/ev/mcp",
            "url": everything.url,
            "policy": {"tools": {"get-env": "deny"}},
        },
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
    )
    url = gw.url("/ev/mcp")
    token = issuer.mint(issuer.claims(url, scope="mcp:tools"))
    base = {**ACCEPT, "Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "resume-test", "version": "1"},
        },
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=json.dumps(init), headers=base) as resp:
            session = {
                "Mcp-Session-Id": resp.headers["Mcp-Session-Id"],
                "MCP-Protocol-Version": "2025-11-25",
            }
            await resp.read()
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with http.post(url, data=json.dumps(initialized), headers={**base, **session}):
            pass
        listing = json.dumps(call("tools/list", 5))
        async with http.post(url, data=listing, headers={**base, **session}) as resp:
            first = (await resp.read()).decode()
        event_ids = [line[4:] for line in first.splitlines() if line.startswith("id: ")]
        assert event_ids  # resumable: the stream's events carry ids
        [listed_first] = [m for m in flatten(sse_payloads(first.encode())) if m.get("id") == 5]
        names = [t["name"] for t in listed_first["result"]["tools"]]
        assert "get-env" not in names
        assert "echo" in names

        resume = {**base, **session, "Accept": "text/event-stream", "Last-Event-ID": event_ids[0]}
        del resume["Content-Type"]
        async with http.get(url, headers=resume) as resp:
            assert resp.status == 200
            replayed: list[Any] = []
            async with asyncio.timeout(10):
                while not any(m.get("id") == 5 for m in replayed):
                    event = await resp.content.readuntil(b"\n\n")
                    replayed += flatten(sse_payloads(event))
    [listed_again] = [m for m in replayed if m.get("id") == 5]
    assert [t["name"] for t in listed_again["result"]["tools"]] == names


async def test_a_filtered_list_reaches_the_caller_as_private_to_caches(
    start_gateway_for: StartGateway, issuer: LocalIssuer
) -> None:
    """A 2026-07-28 list marked `cacheScope: public` may be cached by shared intermediaries
    across tokens; once filtered for one caller it must not be."""

    async def public_list(request: web.Request) -> web.StreamResponse:
        result = {"tools": [{"name": "ok_tool"}, {"name": "no_tool"}], "cacheScope": "public"}
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {**result, "ttlMs": 5}})

    async with recording_upstream(public_list) as upstream:
        gw = await start_gateway_for(
            {"name": "up", "route": "/up/mcp", "url": upstream.url, "policy": POLICY},
            auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
        )
        status, [message] = await post(gw, issuer, call("tools/list", 1))
    assert status == 200
    assert message["result"] == {
        "tools": [{"name": "ok_tool"}],
        "cacheScope": "private",
        "ttlMs": 5,
    }
