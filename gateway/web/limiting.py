"""The limit step: after the policy decision, count the request's calls against the route's
limits (`policy.limits`); over one, 429 and nothing forwarded.

Installed only on routes that have limits when the gateway starts (`build_steps`): every other
route runs exactly the steps it ran before. The limits in force are read from the policy per
request, so a reload that changes them applies at once. Concurrency slots a request takes are
given back when it ends, however it ends (answered, streamed to its end, failed, or the client
gone): both data planes await `context.release` before writing the access line (`end_request`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NoReturn

from gateway.errors import RateLimitedError, StoreUnavailableError
from gateway.observability.logging import get_logger
from gateway.observability.metrics import GatewayMetrics
from gateway.policy.compiled import PolicyStore
from gateway.policy.limits import Caller, Limited, Limiter
from gateway.web.exchange import McpRequest, RequestContext

audit = get_logger("gateway.audit")
LIMITED = "limited"
"""`context.decision` of a call refused by a limit (the access line and the audit see it)."""


def limit_step(
    limiter: Limiter, policies: PolicyStore, route_name: str, metrics: GatewayMetrics
) -> Callable[[McpRequest], Awaitable[None]]:
    """The step that applies the route's limits to the requests of a POST."""

    async def limit(request: McpRequest) -> None:
        context = request.context
        limits = policies.current[route_name].limits
        if limits is None or not context.calls:
            return
        calls = [(c.method, c.name) for c in context.calls if c.kind == "request" and c.method]
        checks = limits.checks(calls, caller_of(context))
        if not checks:
            return
        try:
            admission = await limiter.admit(checks, context.request_id, limits.fallback)
        except StoreUnavailableError:
            metrics.limit_fallbacks.labels(route_name, "refuse").inc()
            raise
        if admission.fallback is not None:
            metrics.limit_fallbacks.labels(route_name, admission.fallback).inc()
        if isinstance(admission, Limited):
            refuse(context, route_name, admission, metrics)
        context.release = admission.release

    return limit


def refuse(
    context: RequestContext, route_name: str, limited: Limited, metrics: GatewayMetrics
) -> NoReturn:
    """Count and audit the refusal, then raise its 429 (the key itself is never logged)."""
    rule = limited.rule
    context.decision = LIMITED
    metrics.limited.labels(route_name, rule.label, limited.kind).inc()
    principal = context.principal
    audit.info(
        "call_limited",
        request_id=context.request_id,
        upstream=route_name,
        limit=rule.label,
        kind=limited.kind,
        by=rule.by,
        sub=principal.subject if principal is not None else None,
        client_id=principal.client_id if principal is not None else None,
        method=context.rpc_method,
        name=context.call_name,
        retry_after=limited.retry_after,
        fallback=limited.fallback,
    )
    raise RateLimitedError(
        f"limit {rule.label} ({limited.kind}) reached",
        message=rule.describe(limited.kind),
        retry_after=limited.retry_after,
    )


def caller_of(context: RequestContext) -> Caller:
    principal, owner = context.principal, context.owner
    return Caller(
        issuer=principal.issuer if principal is not None else None,
        subject=principal.subject if principal is not None else None,
        client_id=principal.client_id if principal is not None else None,
        fingerprint=owner.token_fingerprint if owner is not None else None,
        address=context.client,
    )


async def end_request(context: RequestContext) -> None:
    """Give back what the request holds in the limits (once). Called as a request ends, by
    both data planes, only when it holds something."""
    release, context.release = context.release, None
    if release is not None:
        await release()
