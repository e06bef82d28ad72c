"""The two outermost steps of every request: request context (with the access line) and errors."""

from __future__ import annotations

import asyncio
import itertools
import secrets

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.errors import GatewayError, MethodNotAllowedError, NotFoundError
from gateway.observability.logging import ACCESS_LOG, get_logger
from gateway.web.error_response import render_error
from gateway.web.exchange import RequestContext
from gateway.web.keys import CONTEXT_KEY, METRICS_KEY

error_log = get_logger("gateway.error")

CLIENT_CLOSED = 499  # nginx's code for "client closed the request", for logs and metrics only
MAX_LOGGED_PATH = 256

# Request ids correlate log lines; they carry no authority, so a random per-process prefix and a
# counter serve (unique across replicas and restarts) without a urandom call per request.
_ID_PREFIX = secrets.token_hex(4)
_id_counter = itertools.count()


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):08x}"


@web.middleware
async def request_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id, then write one access line and count it when it ends.

    The line never holds the query string, headers or body: they can carry credentials.
    """
    loop = asyncio.get_running_loop()
    context = RequestContext(request_id=new_request_id(), started=loop.time())
    request[CONTEXT_KEY] = context
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:  # a relayed stream carries it from `forward` already
            response.headers["X-Request-Id"] = context.request_id
        return response
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        now = loop.time()
        if context.response_started is None:
            context.response_started = now
        metrics = request.app[METRICS_KEY]
        metrics.count_request(context.upstream, request.method, status)
        principal = context.principal
        ACCESS_LOG.emit(
            {
                "request_id": context.request_id,
                "method": request.method,
                "path": request.rel_url.raw_path[:MAX_LOGGED_PATH],
                "upstream": context.upstream,
                "sub": principal.subject if principal else None,
                "client_id": principal.client_id if principal else None,
                "rpc_method": context.rpc_method,
                "name": context.call_name,
                "decision": context.decision,
                "required_scopes": sorted(context.required_scopes) if context.decision else None,
                "granted_scopes": sorted(principal.scopes)
                if principal and context.decision
                else None,
                "status": status,
                "upstream_status": context.upstream_status,
                "duration_ms": round((now - context.started) * 1000, 3),
            },
            # Probes and scrapes arrive every few seconds: debug unless they failed.
            quiet=context.upstream == "none" and status < 400,
        )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every error raised before the response started to one rendered response."""
    try:
        return await handler(request)
    except GatewayError as error:
        response = render_error(error, request[CONTEXT_KEY].rpc_id)
        if error.stalled and request.transport is not None:
            # Send the answer, then close (buffered bytes are flushed first) rather than let
            # the server linger reading a body the client is not sending.
            await response.prepare(request)
            await response.write_eof()
            request.transport.close()
        return response
    except web.HTTPNotFound:
        return render_error(NotFoundError("no route"))
    except web.HTTPMethodNotAllowed as exc:
        return render_error(MethodNotAllowedError(tuple(sorted(exc.allowed_methods))))
    except web.HTTPException:
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        error_log.exception("request_failed", request_id=request[CONTEXT_KEY].request_id)
        return render_error(GatewayError("unhandled exception"), request[CONTEXT_KEY].rpc_id)
