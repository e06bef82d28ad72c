"""Sessions at the route: bind each request to its principal's session, mint ids on
`initialize`, end sessions on DELETE, and reap idle ones.

The client only ever sees gateway session ids; the upstream only ever sees its own. A request
naming a session it does not own, or one that is unknown, ended or expired, gets one identical 404
and an audit event; the reason is in the audit event only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from gateway.config.model import SessionSettings
from gateway.errors import RequestError, SessionNotFoundError, UpstreamError
from gateway.mcp_request import is_stateless_era
from gateway.observability.logging import get_logger
from gateway.observability.metrics import GatewayMetrics
from gateway.session.registry import Session, SessionRegistry, SessionRejectedError, limit_key
from gateway.session.seal import ANONYMOUS, SessionSealer, is_upstream_session_id, new_key
from gateway.web.exchange import McpRequest

audit = get_logger("gateway.audit")
log = get_logger("gateway.sessions")

SESSION_HEADER = "Mcp-Session-Id"
REAP_INTERVAL_MAX = 30.0


def build_registry(settings: SessionSettings) -> SessionRegistry:
    """The registry with the configured keys, or one random key for this process."""
    keys = [key.get_secret_value() for key in settings.keys] or [new_key()]
    raw = [base64.urlsafe_b64decode(key + "=") for key in keys]
    return SessionRegistry(settings, SessionSealer(raw))


def session_step(
    registry: SessionRegistry, route: str, rejected: Callable[[str], None]
) -> Callable[[McpRequest], Awaitable[None]]:
    """The pipeline step that resolves `Mcp-Session-Id` to a session the caller owns."""

    async def bind_session(request: McpRequest) -> None:
        context = request.context
        _identify(request)  # sessions and stream limits (a POST's answer may stream) use it
        values = request.headers.getall(SESSION_HEADER, ())
        if not values:
            if opens_session(request):
                registry.check_room(context.limit_key)
            return
        if len(values) > 1:
            raise RequestError("repeated Mcp-Session-Id")
        try:
            assert context.owner is not None
            session = registry.resolve(route, values[0], context.owner, context.limit_key)
            if session.adopted:
                await _not_ended_elsewhere(registry, session)
            context.session = session
        except SessionRejectedError as refusal:
            rejected(refusal.reason)
            principal = context.principal
            audit.warning(
                "session_rejected",
                request_id=context.request_id,
                upstream=context.upstream,
                method=request.method,
                reason=refusal.reason,
                sub=principal.subject if principal else None,
                client_id=principal.client_id if principal else None,
                iss=principal.issuer if principal else None,
            )
            raise SessionNotFoundError("session rejected") from None

    return bind_session


async def _not_ended_elsewhere(registry: SessionRegistry, session: Session) -> None:
    """A session minted by another replica: refused if it ended there (a store that cannot
    say answers 503 and the check runs again on the next request)."""
    assert registry.shared is not None
    if await registry.shared.ended_elsewhere(session):
        registry.end(session)
        raise SessionRejectedError("ended")
    session.adopted = False


def after_upstream_response(
    request: McpRequest,
    registry: SessionRegistry,
    route: str,
    status: int,
    upstream_id: str | None,
) -> str | None:
    """Settle the session once the upstream has answered; returns the gateway session id to
    send the client, if this response opened a session."""
    context = request.context
    session = context.session
    if session is not None:
        # The upstream forgot it (404), or the client ended it (DELETE, unless refused as 405).
        ended = status == 404 or (request.method == "DELETE" and status < 500 and status != 405)
        if ended:
            registry.end(session)
            audit.info(
                "session_ended",
                request_id=context.request_id,
                upstream=context.upstream,
                by="client" if request.method == "DELETE" else "upstream",
            )
        else:
            registry.touch(session)
        return None
    if upstream_id is None or not (200 <= status < 300) or not opens_session(request):
        return None
    if not is_upstream_session_id(upstream_id):
        raise UpstreamError("upstream sent an invalid session id")
    assert context.owner is not None
    session = registry.mint(route, upstream_id, context.owner, context.limit_key)
    audit.info("session_started", request_id=context.request_id, upstream=context.upstream)
    return session.session_id


def _identify(request: McpRequest) -> None:
    """Fill in what this request's limits count against: the owner the authentication step
    established (`pipeline.authentication_step`), or on a route without authentication the
    anonymous owner and the client's address."""
    context = request.context
    owner = context.owner
    if owner is None:
        owner = context.owner = ANONYMOUS
    context.limit_key = limit_key(owner, context.client)


def opens_session(request: McpRequest) -> bool:
    """Whether the request may open a gateway session, so that the session limits apply to it:
    a lone `initialize` of the stateful era. A request of the stateless era (2026-07-28 on)
    opens none, whatever the upstream answers: it is forwarded as it is, and limits that count
    sessions do not apply to it."""
    calls = request.context.calls
    return (
        len(calls) == 1
        and calls[0].method == "initialize"
        and not is_stateless_era(request.headers.get("MCP-Protocol-Version"))
    )


def reaper(
    registry: SessionRegistry,
    settings: SessionSettings,
    end_upstream: Callable[[str, str], None],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that ends idle and expired sessions periodically and tells their
    upstreams (best effort: a DELETE with the upstream's session id)."""
    interval = min(REAP_INTERVAL_MAX, settings.idle_timeout / 2)

    async def run() -> None:
        while True:
            await asyncio.sleep(interval)
            for session in registry.idle():
                shared = registry.shared
                if (
                    shared is not None
                    and session.expires_at > time.time()
                    and await shared.used_elsewhere(session)
                ):
                    registry.keep(session)  # idle here, in use through another replica
                    continue
                registry.end(session)
                log.info("session_reaped", upstream_route=session.route)
                end_upstream(session.route, session.upstream_id)

    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context


def count_rejections(metrics: GatewayMetrics, upstream: str) -> Callable[[str], None]:
    children = {
        reason: metrics.session_rejections.labels(upstream, reason)
        for reason in ("unknown", "foreign", "expired", "ended")
    }
    return lambda reason: children[reason].inc()
