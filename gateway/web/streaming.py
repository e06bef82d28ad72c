"""What ends a response stream before its upstream does, for HTTP and stdio upstreams alike.

A stream outlives the request checks that admitted it, so it ends (cleanly: the client may
resume with a fresh token) when the token that opened it expires or is revoked, or when its
session ends. A client that reads nothing while a write waits on it for `stalled_stream_timeout`
seconds loses its connection instead, so that it cannot pin an upstream connection or process.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from aiohttp import web

from gateway.auth.authenticator import Revocations
from gateway.observability.metrics import GatewayMetrics
from gateway.web.exchange import RequestContext

END_REASONS = (
    "token_expired",
    "token_revoked",
    "revocation_unavailable",
    "session_ended",
    "client_stalled",
)
"""Why the gateway ended a stream (the `reason` of `stream_closed` and of its metric)."""


@contextmanager
def ends_early(
    context: RequestContext, revocations: Revocations | None, end: Callable[[str], None]
) -> Iterator[None]:
    """While the block runs, `end(reason)` is called when the stream's token expires
    (`token_expired`), is revoked (`token_revoked`, or `revocation_unavailable` when the store
    cannot say: fail closed), or its session ends (`session_ended`). It may be called more
    than once; the first reason is the one that counts."""
    principal, session = context.principal, context.session
    expiry = unwatch = None
    session_closer = functools.partial(end, "session_ended")
    if principal is not None:
        remaining = max(principal.expires_at - time.time(), 0.0)
        expiry = asyncio.get_running_loop().call_later(remaining, end, "token_expired")
        if revocations is not None:
            unwatch = revocations.streams.watch(principal, end)
    if session is not None:
        session.streams.add(session_closer)  # an open stream also keeps it from idle reaping
    try:
        yield
    finally:
        if expiry is not None:
            expiry.cancel()
        if unwatch is not None:
            unwatch()
        if session is not None:
            session.streams.discard(session_closer)


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
