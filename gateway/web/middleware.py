"""The two outermost steps of every request: request context (with the access line) and errors."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Sequence
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from multidict import MultiMapping

from gateway.audit.trail import AUDIT
from gateway.errors import GatewayError, MethodNotAllowedError, NotFoundError
from gateway.observability.logging import ACCESS_LOG, get_logger
from gateway.observability.metrics import GatewayMetrics
from gateway.web.audit_record import audit_request
from gateway.web.client_address import IPNetwork, client_address
from gateway.web.edge import response_headers
from gateway.web.error_response import render_error
from gateway.web.exchange import RequestContext
from gateway.web.keys import CONFIG_KEY, CONTEXT_KEY, METRICS_KEY
from gateway.web.limiting import end_request

error_log = get_logger("gateway.error")
client_log = get_logger("gateway.client")

CLIENT_CLOSED = 499  # nginx's code for "client closed the request", for logs and metrics only

# Request ids correlate log lines; they carry no authority, so a random per-process prefix and a
# counter serve (unique across replicas and restarts) without a urandom call per request.
_ID_PREFIX = secrets.token_hex(4)
_id_counter = itertools.count()


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):08x}"


@web.middleware
async def request_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id and its client's address, then write one access line and count
    it when it ends (`record_request`)."""
    proxies = request.app[CONFIG_KEY].server.trusted_proxies
    context = request[CONTEXT_KEY] = new_context(request.remote, request.headers, proxies)
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
        if context.release is not None:  # concurrency slots of `policy.limits`
            await end_request(context)
        record_request(
            request.app[METRICS_KEY], context, request.method, request.rel_url.raw_path, status
        )


def new_context(
    peer: str | None, headers: MultiMapping[str], proxies: Sequence[IPNetwork]
) -> RequestContext:
    """A request's context from its start: a new request id, and its client's address (the
    peer's, or with trusted proxies the one they forwarded: `client_of`)."""
    request_id = new_request_id()
    client = client_of(peer, headers, proxies, request_id) if proxies else peer
    started = asyncio.get_running_loop().time()
    return RequestContext(request_id=request_id, started=started, client=client)


def record_request(
    metrics: GatewayMetrics, context: RequestContext, method: str, path: str, status: int
) -> None:
    """Count a finished request and write its one access line.

    The line never holds the query string (`path` is without it), headers or body: they can
    carry credentials.
    """
    now = asyncio.get_running_loop().time()
    if context.response_started is None:
        context.response_started = now
    metrics.count_request(context.upstream, method, status)
    if AUDIT.trail is not None and context.upstream != "none":
        audit_request(AUDIT.trail, context, method, status, now - context.started)
    principal = context.principal
    line: dict[str, Any] = {
        "request_id": context.request_id,
        "client": context.client,
        "method": method,
        "path": path,  # cut with a marker by ACCESS_LOG
        "upstream": context.upstream,
        "sub": principal.subject if principal else None,
        "client_id": principal.client_id if principal else None,
        "rpc_method": context.rpc_method,
        "name": context.call_name,
        "decision": context.decision,
        "required_scopes": sorted(context.required_scopes) if context.decision else None,
        "granted_scopes": sorted(principal.scopes) if principal and context.decision else None,
        "status": status,
        "upstream_status": context.upstream_status,
        "duration_ms": round((now - context.started) * 1000, 3),
    }
    if context.trace is not None:  # tracing on: the span ends, its ids go in the line
        context.trace.finish(context, status, line)
    # Probes, scrapes and metadata or JWKS fetches arrive all the time: debug unless they
    # failed. The OAuth endpoints a user or client acts through are always info.
    quiet = context.upstream == "none" and status < 400 and not _is_oauth_action(path)
    ACCESS_LOG.emit(line, quiet=quiet)


QUIET_OAUTH_PATHS = frozenset({"/oauth/jwks"})
"""Documents clients fetch repeatedly (with the `/.well-known/` ones): their access lines stay
at debug unless they fail."""


def _is_oauth_action(path: str) -> bool:
    """An authorization-server endpoint a user or client acts through (authorize, sign-in,
    consent, callback, sign-out, token, revocation, registration)."""
    return path.startswith("/oauth/") and path not in QUIET_OAUTH_PATHS


def client_of(
    peer: str | None,
    headers: MultiMapping[str],
    proxies: Sequence[IPNetwork],
    request_id: str,
) -> str | None:
    """The client's address behind trusted `proxies` (see `gateway.web.client_address`): the
    forwarding headers are read only from one of them."""
    found = client_address(
        peer,
        headers.getall(hdrs.FORWARDED, ()),
        headers.getall(hdrs.X_FORWARDED_FOR, ()),
        proxies,
    )
    if found.problem is not None:
        client_log.info(
            "forwarded_client_address_ignored",
            request_id=request_id,
            reason=found.problem,
            peer=found.address,
        )
    return found.address


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every error raised before the response started to one rendered response."""
    try:
        return await handler(request)
    except GatewayError as error:
        context = request[CONTEXT_KEY]
        context.error_code = error.code
        response = render_error(error, context.rpc_id)
        if error.stalled and request.transport is not None:
            # Send the answer, then close (buffered bytes are flushed first) rather than let
            # the server linger reading a body the client is not sending. Sent here, it gets
            # here what the outer middlewares add to answers not yet sent.
            response_headers(response.headers, context)
            response.headers["X-Request-Id"] = context.request_id
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
