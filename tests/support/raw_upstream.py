"""An upstream that parses the exact bytes it receives with h11, an HTTP/1.1 parser independent of
the gateway's (httptools) and of aiohttp's (llhttp).

Every request h11 finds on a connection is recorded, pipelined ones included, so a request
smuggled inside another shows up as a second record; bytes h11 refuses are recorded as a protocol
error. Each request is answered with a small JSON-RPC result, and the connection is kept alive,
as a real upstream would.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from dataclasses import dataclass, field

import h11

REPLY = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"ok": True}}).encode()


@dataclass(frozen=True)
class SeenRequest:
    connection: int
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    """(lower-case name, value) in the order received."""
    body: bytes

    def values(self, name: str) -> list[str]:
        return [value for header, value in self.headers if header == name]


@dataclass
class RawUpstream:
    """Start with `await upstream.start()` in the loop that will serve it."""

    port: int = 0
    requests: list[SeenRequest] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: asyncio.Server | None = None
    _connections: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def snapshot(self) -> tuple[int, int]:
        """(requests, errors) recorded so far, to compare after one client request."""
        with self._lock:
            return len(self.requests), len(self.errors)

    def since(self, mark: tuple[int, int]) -> tuple[list[SeenRequest], list[str]]:
        with self._lock:
            return self.requests[mark[0] :], self.errors[mark[1] :]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = next(self._connections)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is h11.IDLE:
                        return
                    continue
                if isinstance(event, h11.Request):
                    request, body = event, b""
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    self._record(number, request, body)
                    writer.write(
                        conn.send(
                            h11.Response(
                                status_code=200,
                                headers=[
                                    ("Content-Type", "application/json"),
                                    ("Content-Length", str(len(REPLY))),
                                ],
                            )
                        )
                        + conn.send(h11.Data(data=REPLY))
                        + conn.send(h11.EndOfMessage())
                    )
                    await writer.drain()
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except h11.RemoteProtocolError as exc:
            with self._lock:
                self.errors.append(f"connection {number}: {exc}")
        except (ConnectionError, h11.LocalProtocolError):
            pass
        finally:
            writer.close()

    def _record(self, number: int, request: h11.Request, body: bytes) -> None:
        seen = SeenRequest(
            connection=number,
            method=request.method.decode("ascii"),
            target=request.target.decode("latin-1"),
            headers=tuple(
                (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers
            ),
            body=body,
        )
        with self._lock:
            self.requests.append(seen)
