"""An HTTP route served by the lean plane: the whole request in one straight function.

The same steps and forwarder as the aiohttp path (`McpEndpoint`), with the same edge checks,
errors, access line and metrics, called in order without a middleware chain: context and client
address, Host and Origin, the route's pipeline steps (authentication first), then `forward`
writing through a `LeanResponder`. Requests this plane does not take (other methods, preflights,
odd framing) never get here: aiohttp answers them (`gateway.web.plane.head`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from multidict import CIMultiDict

from gateway.errors import GatewayError
from gateway.observability.logging import get_logger
from gateway.observability.metrics import GatewayMetrics
from gateway.web.client_address import IPNetwork
from gateway.web.edge import Edge
from gateway.web.error_response import error_answer
from gateway.web.exchange import McpRequest, RequestContext
from gateway.web.forward import forward
from gateway.web.http_route import HttpRoute
from gateway.web.limiting import end_request
from gateway.web.middleware import CLIENT_CLOSED, new_context, record_request
from gateway.web.pipeline import Step
from gateway.web.plane.body import BodyReader
from gateway.web.plane.connection import ClientConnection
from gateway.web.plane.head import Head
from gateway.web.plane.lanes import After, Lane
from gateway.web.plane.responder import LeanResponder

error_log = get_logger("gateway.error")


class McpLane:
    """One HTTP route on the lean plane."""

    __slots__ = ("_edge", "_metrics", "_proxies", "_route", "_steps")

    def __init__(
        self,
        route: HttpRoute,
        steps: tuple[Step, ...],
        edge: Edge,
        metrics: GatewayMetrics,
        proxies: Sequence[IPNetwork],
    ) -> None:
        self._route = route
        self._steps = steps
        self._edge = edge
        self._metrics = metrics
        self._proxies = proxies

    async def serve(self, conn: ClientConnection, head: Head[Lane], body: BodyReader) -> None:
        """Answer one request, then tell the connection what becomes of it (`answered`).

        One coroutine from the connection's task to `forward`: every await on the way to the
        upstream and back passes through as few frames as the steps allow."""
        request = self._request(conn, head, body)
        method, path, context = head.method, head.path, request.context
        responder = LeanResponder(conn, context, close=not head.keep_alive)
        del head  # its header lines (a token among them) must not outlive a long stream
        status, after = 500, After.CLOSE_NOW
        try:
            try:
                self._edge.admit_mcp(request.context, request.headers, request.transport)
                context.upstream = self._route.name
                for step in self._steps:
                    await step(request)
                await forward(request, self._route, responder)
            except GatewayError as error:
                _answer_error(responder, error, context)
            except (asyncio.CancelledError, ConnectionResetError):
                raise
            except Exception:
                error_log.exception("request_failed", request_id=context.request_id)
                _answer_error(responder, GatewayError("unhandled exception"), context)
            status = responder.status
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        except ConnectionResetError:  # the client left before its answer could be written
            responder.close = responder.abandon = True
            status = responder.status if responder.started else CLIENT_CLOSED
        finally:
            if context.release is not None:  # concurrency slots of `policy.limits`
                await end_request(context)
            record_request(self._metrics, context, method, path, status)
            if not responder.abandon:
                after = After.CLOSE if responder.close else After.KEEP
            conn.answered(after)

    def _request(self, conn: ClientConnection, head: Head[Lane], body: BodyReader) -> McpRequest:
        """The request as the steps see it: its headers, context and client address."""
        headers = CIMultiDict(
            [(n.decode("ascii"), v.decode("utf-8", "surrogateescape")) for n, v in head.headers]
        )
        context = new_context(conn.peer, headers, self._proxies)
        length = head.content_length if "Content-Length" in headers else None
        return McpRequest(
            context, head.method, head.target, headers, head.headers, length, body, conn.transport
        )


def _answer_error(responder: LeanResponder, error: GatewayError, context: RequestContext) -> None:
    """The error's answer (`error_answer`, as aiohttp's error middleware renders it); after a
    stream has started there is none to give but a closed connection. A stalled body's error
    closes at once, without waiting for the rest (as aiohttp's error middleware does)."""
    if responder.started:
        responder.close = responder.abandon = True
        return
    context.error_code = error.code
    answer = error_answer(error, context.rpc_id)
    if answer.close:
        responder.close = True
    responder.abandon = error.stalled
    responder.answer(answer.status, CIMultiDict(answer.headers), answer.body)
