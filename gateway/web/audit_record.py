"""The audit record of one MCP request, and the trail's place in the app's life.

`record_request` (the one place both data planes call when a request is answered) hands the
finished request to `audit_request`, so status and duration are known. The record never holds
a header, token, cookie, session id or query string; arguments only as the route's
`policy.audit` rules say (default: every one hashed).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from gateway.audit.canonical import FORMAT_VERSION
from gateway.audit.chain import KeySource
from gateway.audit.trail import AuditTrail, build_sink
from gateway.compiler import CompiledConfig
from gateway.config.audit import AuditSettings
from gateway.oauth.server import AuthorizationServer
from gateway.oauth.signing import SigningKey
from gateway.observability.logging import get_logger
from gateway.policy.compiled import PolicyStore
from gateway.policy.redaction import NO_RULES, REDACTED_KINDS, Hasher, Redaction, keyed_hasher
from gateway.web.exchange import RequestContext
from gateway.web.keys import METRICS_KEY

log = get_logger("gateway")


def audit_request(
    trail: AuditTrail,
    context: RequestContext,
    method: str,
    status: int,
    duration: float,
) -> None:
    """Queue the record of an answered MCP request. `decision`: the policy's (or `limited`),
    else `refused` when the gateway answered with an error before deciding (`error` names
    it), else None (a route without a policy)."""
    principal = context.principal
    decision = context.decision
    if decision is None and context.error_code is not None:
        decision = "refused"
    record: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "kind": "request",
        "time": trail.now(),
        "request_id": context.request_id,
        "route": context.upstream,
        "client": context.client,
        "http_method": method,
        "principal": None
        if principal is None
        else {"iss": principal.issuer, "sub": principal.subject, "client_id": principal.client_id},
        "method": context.rpc_method,
        "name": context.call_name,
        "decision": decision,
        "error": context.error_code,
        "status": status,
        "upstream_status": context.upstream_status,
        "duration_us": int(duration * 1_000_000),
    }
    payload = context.message.payload if context.message is not None else None
    if payload is not None:
        rules = trail.redaction(context.upstream)
        if isinstance(payload, dict):
            arguments = _arguments(payload, rules, trail.hasher)
            if arguments is not _NONE:
                record["arguments"] = arguments
        else:  # a batch (2025-03-26): each message's method, name and arguments
            record["batch"] = [_call(item, rules, trail.hasher) for item in payload]
    trail.append(record)


_NONE = object()


def _arguments(message: dict[str, Any], rules: Redaction, hasher: Hasher) -> object:
    """The message's `params.arguments` as recorded, or `_NONE` when it has none to record."""
    method = message.get("method")
    params = message.get("params")
    if method not in REDACTED_KINDS or not isinstance(params, dict) or "arguments" not in params:
        return _NONE
    name = params.get("name")
    rule = rules.rule_for(method, name if isinstance(name, str) else None)
    return rule.apply(params["arguments"], hasher)


def _call(message: object, rules: Redaction, hasher: Hasher) -> dict[str, Any]:
    if not isinstance(message, dict):
        return {}
    method, params = message.get("method"), message.get("params")
    name = params.get("name", params.get("uri")) if isinstance(params, dict) else None
    call: dict[str, Any] = {
        "method": method if isinstance(method, str) else None,
        "name": name if isinstance(name, str) else None,
    }
    arguments = _arguments(message, rules, hasher)
    if arguments is not _NONE:
        call["arguments"] = arguments
    return call


def build_trail(
    settings: AuditSettings, signing_key: SigningKey | None, facade: AuthorizationServer | None
) -> AuditTrail:
    """The trail `settings` describe. Checkpoints are signed with `audit.signing_key`, else
    the facade's current key (compiling the config made sure there is one)."""
    key: KeySource
    if signing_key is not None:
        own = signing_key

        def key() -> SigningKey:
            return own
    else:
        assert facade is not None  # without the facade, audit.signing_key is required

        def key() -> SigningKey:
            return facade.keys.current

    if settings.hash_key is not None:
        hash_key = _decoded(settings.hash_key.get_secret_value())
    else:
        hash_key = secrets.token_bytes(32)
        log.warning("audit_hash_key_generated", note="argument hashes compare only within this run")
    sink = build_sink(settings.sink, settings.file, settings.rotate_bytes)
    return AuditTrail(
        sink,
        key,
        keyed_hasher(hash_key),
        checkpoint_records=settings.checkpoint_records,
        checkpoint_seconds=settings.checkpoint_seconds,
    )


def _decoded(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def route_redaction(policies: PolicyStore) -> Callable[[str], Redaction]:
    """The redaction rules in force for a route (they reload with the policy)."""

    def of(route: str) -> Redaction:
        policy = policies.current.get(route)
        return policy.redaction if policy is not None else NO_RULES

    return of


def install_audit(
    app: web.Application,
    compiled: CompiledConfig,
    policies: PolicyStore,
    facade: AuthorizationServer | None,
) -> None:
    """The audit trail, when `audit` is configured: started first and stopped last, so the
    records of requests answered while the gateway stops are in it before the final
    checkpoint."""
    settings = compiled.config.audit
    if settings is None:
        return
    trail = build_trail(settings, compiled.audit_key, facade)
    trail.redaction = route_redaction(policies)
    records = app[METRICS_KEY].audit_records
    trail.count = lambda outcome, count: records.labels(outcome).inc(count)
    app.cleanup_ctx.insert(0, trail_context(trail))


def trail_context(trail: AuditTrail) -> Callable[[web.Application], AsyncIterator[None]]:
    """Start the trail with the app; at cleanup (after the last request was answered), write
    a final checkpoint and flush."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        trail.start()
        try:
            yield
        finally:
            trail.close()

    return run
