"""One client session's traffic with its own stdio server process.

Ids: every request the client sends gets a fresh integer id on the way to the process, so ids
can never collide whatever the client uses, and the response is mapped back to the client's
id before it leaves. A response whose id the gateway did not assign is dropped and logged.

What the server sends on its own (requests such as sampling, elicitation and roots, and
notifications) belongs to this session, since the process serves no one else. It goes, in this
order of preference: a progress notification to the request whose `progressToken` it names;
anything else to the one request in flight (the server is asking on its behalf), else to the
client's GET stream, else to the most recent request in flight; with none of these open it is
dropped and logged, never delivered to anyone else. The client may answer only the server
requests it was sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from gateway.jsonrpc import JsonRpcId
from gateway.observability.logging import get_logger
from gateway.stdio.process import StdioProcess

log = get_logger("gateway.stdio")

QUEUE_LIMIT = 1000
"""Messages waiting for one stream; past it the server is outrunning the client: drop."""
MAX_SERVER_REQUESTS = 1000
"""Server requests awaiting the client's answer."""

Message = dict[str, Any]


@dataclass(eq=False)
class InFlight:
    """A client request waiting for its response; `queue` ends with None."""

    client_id: JsonRpcId
    progress_token: object
    queue: asyncio.Queue[Message | None] = field(default_factory=asyncio.Queue)


class StreamBusyError(Exception):
    """The session already has a GET stream open."""


class StdioSession:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.process: StdioProcess | None = None
        self._next_id = 0
        self._in_flight: dict[int, InFlight] = {}
        self._stream: asyncio.Queue[Message | None] | None = None
        self._server_requests: set[JsonRpcId] = set()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive

    # -- from the client ------------------------------------------------------------------------

    async def request(self, message: Message) -> tuple[int, InFlight]:
        """Send a client request under a fresh id; its messages then arrive on the queue."""
        child_id = self._next_id
        self._next_id += 1
        params = message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        pending = InFlight(message.get("id"), token)
        self._in_flight[child_id] = pending
        try:
            await self._send({**message, "id": child_id})
        except ConnectionError:
            self._in_flight.pop(child_id, None)
            raise
        return child_id, pending

    def abandon(self, child_id: int) -> None:
        """The client went away: its response, when it comes, has nowhere to go."""
        self._in_flight.pop(child_id, None)

    async def notify(self, message: Message) -> None:
        """A client notification, passed on as it is."""
        await self._send(message)

    async def answer(self, message: Message) -> bool:
        """The client's response to a server request; False (dropped) for any other id."""
        rpc_id = message.get("id")
        if rpc_id not in self._server_requests:
            return False
        self._server_requests.discard(rpc_id)
        await self._send(message)
        return True

    async def _send(self, message: Message) -> None:
        if self.process is None:
            raise ConnectionError("the stdio server is not running")
        await self.process.send(message)

    def open_stream(self) -> asyncio.Queue[Message | None]:
        if self._stream is not None:
            raise StreamBusyError("a GET stream is already open")
        self._stream = asyncio.Queue()
        return self._stream

    def close_stream(self, queue: asyncio.Queue[Message | None]) -> None:
        if self._stream is queue:
            self._stream = None

    # -- from the process -----------------------------------------------------------------------

    def on_message(self, message: Message) -> None:
        if "method" not in message:
            self._on_response(message)
            return
        target = self._target(message)
        if target is None:
            self._drop(message, "no open stream")
            return
        if "id" in message:
            if len(self._server_requests) >= MAX_SERVER_REQUESTS:
                self._drop(message, "too many unanswered server requests")
                return
            self._server_requests.add(message["id"])
        self._put(target, message)

    def _on_response(self, message: Message) -> None:
        child_id = message.get("id")
        pending = (
            self._in_flight.pop(child_id, None)
            if isinstance(child_id, int) and not isinstance(child_id, bool)
            else None
        )
        if pending is None:
            self._drop(message, "response to no request of this session")
            return
        self._put(pending.queue, {**message, "id": pending.client_id})
        pending.queue.put_nowait(None)

    def _target(self, message: Message) -> asyncio.Queue[Message | None] | None:
        if message.get("method") == "notifications/progress":
            params = message.get("params")
            token = params.get("progressToken") if isinstance(params, dict) else None
            for pending in self._in_flight.values():
                if token is not None and pending.progress_token == token:
                    return pending.queue
        if len(self._in_flight) == 1:
            return next(iter(self._in_flight.values())).queue
        if self._stream is not None:
            return self._stream
        if self._in_flight:
            return self._in_flight[max(self._in_flight)].queue
        return None

    def _put(self, queue: asyncio.Queue[Message | None], message: Message) -> None:
        if queue.qsize() >= QUEUE_LIMIT:  # the end marker (None) always fits
            self._drop(message, "stream backlog full")
        else:
            queue.put_nowait(message)

    def _drop(self, message: Message, why: str) -> None:
        log.warning(
            "stdio_message_dropped",
            upstream=self.upstream,
            method=message.get("method"),
            why=why,
        )

    def on_exit(self) -> None:
        """The process is gone: every request in flight gets an error, every stream ends."""
        for pending in self._in_flight.values():
            error = {
                "jsonrpc": "2.0",
                "id": pending.client_id,
                "error": {"code": -32603, "message": "The MCP server process ended"},
            }
            self._put(pending.queue, error)
            pending.queue.put_nowait(None)
        self._in_flight.clear()
        if self._stream is not None:
            self._stream.put_nowait(None)
