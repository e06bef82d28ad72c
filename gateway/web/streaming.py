"""What ends a response stream before its upstream does, for HTTP and stdio upstreams alike.

A stream outlives the request checks that admitted it, so it ends (cleanly: the client may
resume with a fresh token) when the token that opened it expires or is revoked, or when its
session ends. A client that reads nothing while a write waits on it for `stalled_stream_timeout`
seconds loses its connection instead, so that it cannot pin an upstream connection or process.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from gateway.auth.authenticator import RouteAuthenticator
from gateway.observability.metrics import GatewayMetrics
from gateway.session.registry import Session
from gateway.web.exchange import RequestContext

END_REASONS = (
    "token_expired",
    "token_revoked",
    "revocation_unavailable",
    "session_ended",
    "client_stalled",
)
"""Why the gateway ended a stream (the `reason` of `stream_closed` and of its metric)."""


class EndsEarly:
    """While the block runs, `end(reason)` is called when the stream's token expires
    (`token_expired`), is revoked (`token_revoked`, or `revocation_unavailable` when the store
    cannot say: fail closed), or its session ends (`session_ended`). It may be called more
    than once; the first reason is the one that counts. A class with slots rather than a
    generator: one is held by every open stream."""

    __slots__ = (
        "_authenticator",
        "_closer",
        "_end",
        "_expires_at",
        "_session",
        "_unwatch",
        "context",
    )

    def __init__(
        self,
        context: RequestContext,
        authenticator: RouteAuthenticator | None,
        end: Callable[[str], None],
    ) -> None:
        """`authenticator`: the route's, which admitted the request's principal (if any)."""
        self.context = context
        self._authenticator = authenticator
        self._end = end
        self._expires_at: float | None = None
        self._unwatch: Callable[[], None] | None = None
        self._session: Session | None = None
        self._closer: Callable[[], None] | None = None

    def __enter__(self) -> None:
        principal, session, end = self.context.principal, self.context.session, self._end
        if principal is not None:
            authenticator = self._authenticator
            if authenticator is None:
                raise RuntimeError("a principal with no authenticator to watch its token")
            self._expires_at = principal.expires_at
            authenticator.expiries.watch(self._expires_at, end)
            if authenticator.revocations is not None:
                self._unwatch = authenticator.revocations.streams.watch(principal, end)
        if session is not None:
            self._session, self._closer = session, functools.partial(end, "session_ended")
            session.streams.add(self._closer)  # an open stream also keeps it from idle reaping

    def __exit__(self, *exc_info: object) -> None:
        if self._expires_at is not None and self._authenticator is not None:
            self._authenticator.expiries.unwatch(self._expires_at, self._end)
        if self._unwatch is not None:
            self._unwatch()
        if self._session is not None and self._closer is not None:
            self._session.streams.discard(self._closer)


class Writable(Protocol):
    """A response being written: aiohttp's `StreamResponse`, or a `Responder`."""

    async def write(self, data: bytes) -> None: ...

    async def write_eof(self, data: bytes = b"") -> None: ...


async def write_within(
    stream: Writable, data: bytes, seconds: float, *, last: bool = False
) -> None:
    """Write (and with `last`, end the response) within `seconds`: a write waits for a client
    whose buffers are full to read. Raises TimeoutError for a client that did not."""
    async with asyncio.timeout(seconds):
        await (stream.write_eof(data) if last else stream.write(data))


def drop_client(request: web.Request) -> None:
    """Close the client's connection now, discarding what it has not read."""
    if request.transport is not None:
        request.transport.abort()


def count_ended(metrics: GatewayMetrics, upstream: str, reason: str) -> None:
    metrics.streams_closed.labels(upstream, reason).inc()
