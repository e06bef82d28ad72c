"""A real gateway (and the servers around it) on an event loop in a background thread, for
synchronous tests such as hypothesis properties that send thousands of raw requests."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import h11

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread; `run(coro)` waits for a result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @contextmanager
    def running(self) -> Iterator[LoopThread]:
        self._thread.start()
        try:
            yield self
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


def raw_exchange(port: int, request: bytes, timeout: float = 10.0) -> int | None:
    """Send `request` bytes on a new connection; the status of the first response (h11-parsed),
    or None if the server closed without one."""
    client = h11.Connection(h11.CLIENT)
    # Only the response is parsed: tell h11 a request went out so it expects one.
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                client.receive_data(data)
                if not data:
                    try:
                        event = client.next_event()
                    except h11.RemoteProtocolError:
                        return None
                    return event.status_code if isinstance(event, h11.Response) else None
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                # Read the rest so the server is done with this request before we compare.
                try:
                    while not isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        event = client.next_event()
                        if event is h11.NEED_DATA:
                            client.receive_data(sock.recv(65536))
                except h11.RemoteProtocolError:
                    pass
                return status
            return None
