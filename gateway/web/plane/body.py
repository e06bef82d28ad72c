"""A request body as the lean plane receives it: the `BodySource` the body step reads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class BodyReader:
    """The `Content-Length` bytes after a head, fed by the connection as they arrive."""

    __slots__ = ("_chunks", "_dropping", "_lost", "_remaining", "_waiter", "buffered", "on_read")

    def __init__(self, length: int) -> None:
        self._remaining = length
        self._chunks: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._lost = False
        self._dropping = False
        self.buffered = 0
        """Bytes received and not read yet (the connection stops reading beyond a bound)."""
        self.on_read: Callable[[], None] | None = None
        """Called when what was buffered has been read."""

    def feed(self, data: bytes) -> bytes:
        """Take what belongs to the body; return the rest (the next request's bytes)."""
        take = self._remaining
        if take == 0 or not data:
            return data
        if len(data) > take:
            data, rest = data[:take], data[take:]
        else:
            rest = b""
        self._remaining -= len(data)
        if self._dropping:
            return rest
        self._chunks.append(data)
        self.buffered += len(data)
        self._wake()
        return rest

    def drop(self) -> None:
        """The request was answered without its body: what is left of it is read and dropped."""
        self._dropping = True
        self._chunks.clear()
        self.buffered = 0
        self.on_read = None

    def lost(self) -> None:
        """The connection is gone: a pending read fails."""
        self._lost = True
        self._wake()

    def is_eof(self) -> bool:
        """Whether the whole body has arrived (it may not have been read yet)."""
        return self._remaining == 0

    def read_nowait(self, n: int = -1) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self.on_read is not None:
            self.on_read()
        return data

    async def readany(self) -> bytes:
        """What has arrived and not been read, waiting for some; b"" at the end of the body."""
        while not self._chunks and self._remaining:
            if self._lost:
                raise ConnectionResetError("client connection lost")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.read_nowait()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
