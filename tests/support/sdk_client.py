"""Drive a real MCP server (or the gateway) with the official mcp 2.x client.

The client runs in its default ``mode="auto"``: it first POSTs ``server/discover`` at
2026-07-28 (``MCP-Protocol-Version: 2026-07-28``, ``Mcp-Method: server/discover``) and falls
back to ``initialize`` at 2025-11-25 when that gets any 4xx or JSON-RPC error. The negotiated
version is ``Client.protocol_version``.

`connect` hands out the SDK's own `Client` for anything bespoke; `list_and_call` and
`call_with_progress` return plain data for assertions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
from mcp import Client
from mcp.client.client import ConnectMode
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import CallToolResult

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class ToolOutcome:
    """A `tools/call` result as plain data."""

    content: list[dict[str, Any]]
    structured_content: dict[str, Any] | None
    is_error: bool

    @property
    def text(self) -> str:
        """The text of all text content blocks, joined by newlines."""
        return "\n".join(block["text"] for block in self.content if block.get("type") == "text")

    @classmethod
    def from_result(cls, result: CallToolResult) -> ToolOutcome:
        return cls(
            content=[
                block.model_dump(mode="json", by_alias=True, exclude_none=True)
                for block in result.content
            ],
            structured_content=result.structured_content,
            is_error=result.is_error,
        )


@dataclass(frozen=True)
class SessionOutcome:
    """What one connection saw: negotiated version, server name, tool names, optional call."""

    protocol_version: str
    server_name: str | None
    tools: list[str]
    call: ToolOutcome | None = None


@dataclass(frozen=True)
class ProgressEvent:
    """One ``notifications/progress`` as delivered to the client's progress callback."""

    progress: float
    total: float | None
    message: str | None


@dataclass(frozen=True)
class ProgressOutcome:
    """A tool call made with a progress callback.

    ``events_before_result`` is how many progress events had been delivered when the
    ``tools/call`` result was handed back; equal to ``len(events)`` unless one raced in late.
    """

    protocol_version: str
    result: ToolOutcome
    events: list[ProgressEvent] = field(default_factory=list)
    events_before_result: int = 0


ProgressHandler = Callable[[ProgressEvent, Client], Awaitable[None]]
"""Called for each progress event with the live client (e.g. to call ``release`` on it)."""


def _sole_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def connect(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    auth: httpx2.Auth | None = None,
    http_client: httpx2.AsyncClient | None = None,
    mode: ConnectMode = "auto",
    timeout: float = DEFAULT_TIMEOUT,
    **client_options: Any,
) -> AsyncIterator[Client]:
    """A connected, negotiated 2.x `Client` for the Streamable HTTP endpoint ``url``.

    ``client_options`` go to `Client` (e.g. ``sampling_callback``).
    ``headers`` / ``auth`` configure the HTTP client this function creates; pass
    ``http_client`` instead to bring your own (e.g. one with an ``OAuthClientProvider``).
    ``timeout`` bounds each MCP request (``read_timeout_seconds``). A failure the SDK wraps
    in a one-exception ``ExceptionGroup`` (its task groups do) is re-raised as that one
    exception, so tests can ``pytest.raises(MCPError)``.
    """
    if http_client is not None and (headers is not None or auth is not None):
        raise ValueError("pass headers/auth or http_client, not both")
    try:
        async with AsyncExitStack() as stack:
            if http_client is None:
                http_client = await stack.enter_async_context(
                    # The SDK's default timeouts (long reads for SSE streams).
                    create_mcp_http_client(headers=dict(headers) if headers else None, auth=auth)
                )
            transport = streamable_http_client(url, http_client=http_client)
            client = await stack.enter_async_context(
                Client(transport, mode=mode, read_timeout_seconds=timeout, **client_options)
            )
            yield client
    except BaseExceptionGroup as group:
        leaf = _sole_leaf(group)
        if leaf is None:
            raise
        raise leaf from group


async def list_and_call(
    url: str,
    tool: str | None = None,
    arguments: dict[str, Any] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    mode: ConnectMode = "auto",
    timeout: float = DEFAULT_TIMEOUT,
) -> SessionOutcome:
    """Connect, list tools, optionally call ``tool``; return what was seen as plain data."""
    async with connect(url, headers=headers, mode=mode, timeout=timeout) as client:
        listing = await client.list_tools()
        call = None
        if tool is not None:
            call = ToolOutcome.from_result(await client.call_tool(tool, arguments or {}))
        server_info = client.server_info
        return SessionOutcome(
            protocol_version=client.protocol_version,
            server_name=server_info.name if server_info is not None else None,
            tools=[t.name for t in listing.tools],
            call=call,
        )


async def call_with_progress(
    url: str,
    tool: str,
    arguments: dict[str, Any] | None = None,
    *,
    on_progress: ProgressHandler | None = None,
    headers: Mapping[str, str] | None = None,
    mode: ConnectMode = "auto",
    timeout: float = DEFAULT_TIMEOUT,
) -> ProgressOutcome:
    """Call ``tool`` with a progress callback (so the request carries a ``progressToken``).

    ``on_progress`` runs for every event while the call is in flight; with the SDK test
    server, releasing ``slow_progress`` from it proves progress arrives before the result:

        async def release(event, client):
            if event.progress == 1:
                await client.call_tool("release", {"key": key})
    """
    events: list[ProgressEvent] = []

    async with connect(url, headers=headers, mode=mode, timeout=timeout) as client:

        async def record(progress: float, total: float | None, message: str | None) -> None:
            event = ProgressEvent(progress, total, message)
            events.append(event)
            if on_progress is not None:
                await on_progress(event, client)

        result = await client.call_tool(tool, arguments or {}, progress_callback=record)
        seen = len(events)
        return ProgressOutcome(
            protocol_version=client.protocol_version,
            result=ToolOutcome.from_result(result),
            events=list(events),
            events_before_result=seen,
        )
