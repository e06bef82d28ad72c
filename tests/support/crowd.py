"""Many MCP clients at once, for isolation tests: a `Crowd` that makes them meet at named
phases, a raw JSON-RPC client that keeps every message the server side sent, and the official
2.x SDK client with an inbox for every progress notification it receives, whatever its token.

The raw client speaks Streamable HTTP itself (one `aiohttp.ClientSession` each) and reads every
SSE event and JSON body of every response, so a message meant for another client cannot be
hidden by client-side filtering (the SDK drops responses and progress for ids it does not know).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from mcp import Client
from mcp.client.client import ConnectMode
from mcp.client.session import IncomingMessage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import ProgressNotification

MODERN = "2026-07-28"
STATEFUL = "2025-11-25"
ACCEPT = "application/json, text/event-stream"

Era = Literal["modern", "stateful"]
Message = dict[str, Any]


class Crowd:
    """`size` clients that meet at named phases: none leaves a phase until all have reached it.

    A client that fails calls `abandon()`, so the others stop waiting at once (their `meet`
    raises `asyncio.BrokenBarrierError`) instead of running into the timeout.
    """

    def __init__(self, size: int, phases: Iterable[str], *, timeout: float) -> None:
        self.timeout = timeout
        self._barriers = {phase: asyncio.Barrier(size) for phase in phases}

    async def meet(self, phase: str) -> None:
        async with asyncio.timeout(self.timeout):
            await self._barriers[phase].wait()

    async def abandon(self) -> None:
        for barrier in self._barriers.values():
            await barrier.abort()


def summarize(message: Message) -> tuple[Any, ...]:
    """A JSON-RPC message as a short comparable tuple: what isolation checks look at.

    Progress: ("progress", token, progress, total); result: ("result", id, text of its text
    blocks or None); error: ("error", id, message); another request or notification: (kind,
    method, id); anything that is not JSON-RPC: ("not JSON-RPC", the message).
    """
    if message.get("jsonrpc") != "2.0":
        return ("not JSON-RPC", message)
    method = message.get("method")
    if method == "notifications/progress":
        params = message.get("params") or {}
        return (
            "progress",
            params.get("progressToken"),
            params.get("progress"),
            params.get("total"),
        )
    if method is not None:
        return ("request" if "id" in message else "notification", method, message.get("id"))
    if "error" in message:
        return ("error", message.get("id"), (message["error"] or {}).get("message"))
    result = message.get("result") or {}
    texts = [b.get("text") for b in result.get("content") or () if b.get("type") == "text"]
    return ("result", message.get("id"), "\n".join(texts) if texts else None)


@dataclass(frozen=True)
class Exchange:
    """One HTTP request and everything its response carried."""

    status: int
    content_type: str
    messages: list[Message]

    def summaries(self) -> list[tuple[Any, ...]]:
        return [summarize(message) for message in self.messages]


class RawMcpClient:
    """A Streamable HTTP client built from plain HTTP requests, with its own connection pool.

    `era="modern"` sends 2026-07-28 stateless requests (per-request `_meta` envelope and the
    `MCP-Protocol-Version` / `Mcp-Method` / `Mcp-Name` headers); `era="stateful"` initializes a
    2025-11-25 session and sends its `Mcp-Session-Id` with every later request.
    """

    def __init__(self, url: str, token: str, *, era: Era) -> None:
        self.url = url
        self.era = era
        self.session_id: str | None = None
        self._headers = {"Authorization": f"Bearer {token}", "Accept": ACCEPT}
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RawMcpClient:
        self._http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._http is not None
        await self._http.close()

    async def open(self, rpc_id: int) -> list[Exchange]:
        """Discover (modern) or initialize (stateful) with `rpc_id`; the exchanges it took."""
        if self.era == "modern":
            return [await self.post({"id": rpc_id, "method": "server/discover", "params": {}})]
        init = await self.post(
            {
                "id": rpc_id,
                "method": "initialize",
                "params": {
                    "protocolVersion": STATEFUL,
                    "capabilities": {},
                    "clientInfo": {"name": "raw-isolation-client", "version": "1.0.0"},
                },
            }
        )
        initialized = await self.post({"method": "notifications/initialized"})
        return [init, initialized]

    async def call_tool(
        self,
        rpc_id: int,
        name: str,
        arguments: dict[str, Any],
        *,
        progress_token: str | int | None = None,
        on_message: Callable[[Message], None] | None = None,
    ) -> Exchange:
        params: dict[str, Any] = {"name": name, "arguments": arguments}
        if progress_token is not None:
            params["_meta"] = {"progressToken": progress_token}
        message = {"id": rpc_id, "method": "tools/call", "params": params}
        return await self.post(message, on_message=on_message)

    async def end_session(self) -> int | None:
        """DELETE the session (stateful era); the status, or None when there is none."""
        if self.session_id is None:
            return None
        assert self._http is not None
        headers = self._headers | {"Mcp-Session-Id": self.session_id}
        async with self._http.delete(self.url, headers=headers) as response:
            await response.read()
            return response.status

    async def post(
        self, message: Message, *, on_message: Callable[[Message], None] | None = None
    ) -> Exchange:
        """POST one JSON-RPC message; read the whole response (JSON body or SSE stream),
        calling `on_message` for each message as it arrives."""
        assert self._http is not None
        body = {"jsonrpc": "2.0", **message}
        headers = dict(self._headers)
        method = body["method"]
        if self.era == "modern":
            params = body["params"] = dict(body.get("params", {}))
            params["_meta"] = {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
                **params.get("_meta", {}),
            }
            headers |= {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
            if method == "tools/call":
                headers["Mcp-Name"] = params["name"]
        elif self.session_id is not None:
            headers |= {"MCP-Protocol-Version": STATEFUL, "Mcp-Session-Id": self.session_id}
        async with self._http.post(self.url, json=body, headers=headers) as response:
            if method == "initialize":
                self.session_id = response.headers.get("Mcp-Session-Id")
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            messages: list[Message] = []
            if content_type == "text/event-stream":
                async for event in _sse_messages(response.content):
                    messages.append(event)
                    if on_message is not None:
                        on_message(event)
            else:
                data = await response.read()  # a 202 may say JSON and carry nothing
                if data and content_type == "application/json":
                    document = json.loads(data)
                    messages = document if isinstance(document, list) else [document]
                elif data:
                    messages = [{"body": data.decode(errors="replace")[:200]}]
                for item in messages:
                    if on_message is not None:
                        on_message(item)
            return Exchange(response.status, content_type, messages)


async def _sse_messages(content: aiohttp.StreamReader) -> AsyncIterator[Message]:
    """The JSON data of each SSE event (events with empty data, like priming events, skipped)."""
    data: list[str] = []
    async for raw in content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data and any(data):
                yield json.loads("\n".join(data))
            data = []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            if name == "data":
                data.append(value.removeprefix(" "))
    if data and any(data):
        yield json.loads("\n".join(data))


@dataclass
class Inbox:
    """The progress notifications an SDK client received (for any token), and the transport
    faults it reported."""

    progress: list[ProgressNotification] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)

    async def __call__(self, message: IncomingMessage) -> None:
        if isinstance(message, Exception):
            self.faults.append(f"{type(message).__name__}: {message}")
        elif isinstance(message, ProgressNotification):
            self.progress.append(message)


@asynccontextmanager
async def sdk_client(
    url: str, token: str, *, inbox: Inbox, mode: ConnectMode = "auto", timeout: float = 30.0
) -> AsyncIterator[Client]:
    """A connected 2.x SDK `Client` that sends `token` and files in `inbox` what its message
    handler sees (the SDK tees every notification to it, progress for any token included)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        create_mcp_http_client(headers=headers) as http,
        Client(
            streamable_http_client(url, http_client=http),
            mode=mode,
            read_timeout_seconds=timeout,
            message_handler=inbox,
        ) as client,
    ):
        yield client
