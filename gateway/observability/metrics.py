"""Prometheus metrics, `mcp_gateway_<noun>_<unit|total>`, with small fixed label sets.

Metrics live on a registry passed in, so every app (and every test) gets its own.
Labels never carry a token, session id, path or anything a client chose freely.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from gateway import __version__
from gateway.observability.loop_metrics import CounterChild, LoopCounter, LoopHistogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
KNOWN_METHODS = frozenset({"GET", "POST", "DELETE", "OPTIONS", "HEAD", "PUT", "PATCH"})


class GatewayMetrics:
    """All of the gateway's metrics on one registry, with label children cached for the hot path.

    The families are declared by concern, one builder each: traffic, authentication and
    policy, sessions and stream limits, the state store. Those every request updates (requests,
    durations, token checks, decisions) are `loop_metrics` families: no lock per update, the
    same exposition.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        Info("mcp_gateway_build", "Build information.", registry=registry).info(
            {"version": __version__}
        )
        self._add_traffic(registry)
        self._add_authorization(registry)
        self._add_sessions_and_limits(registry)
        self._add_state_store(registry)
        self._add_limits(registry)
        self._request_children: dict[tuple[str, str, int], CounterChild] = {}

    def _add_traffic(self, registry: CollectorRegistry) -> None:
        """Requests answered, how long they took, how the upstreams failed, open streams."""
        self.requests = LoopCounter(
            "mcp_gateway_requests_total",
            "HTTP requests answered, by upstream route, HTTP method and status code.",
            ("upstream", "method", "status"),
            registry=registry,
        )
        self.request_duration = LoopHistogram(
            "mcp_gateway_request_duration_seconds",
            "Time from request received to response headers sent, by upstream route.",
            ("upstream",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_duration = LoopHistogram(
            "mcp_gateway_upstream_duration_seconds",
            "Time from upstream request sent to upstream response headers received.",
            ("upstream",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_errors = Counter(
            "mcp_gateway_upstream_errors_total",
            "Upstream failures, by kind: connect, timeout, closed (before headers), protocol, "
            "stream (after headers).",
            ("upstream", "kind"),
            registry=registry,
        )
        self.open_streams = Gauge(
            "mcp_gateway_open_streams",
            "Responses currently being streamed to clients (SSE), by upstream route.",
            ("upstream",),
            registry=registry,
        )

    def _add_authorization(self, registry: CollectorRegistry) -> None:
        """Token checks, the key fetches behind them, and the policy that decides each call."""
        self.token_validations = LoopCounter(
            "mcp_gateway_token_validations_total",
            "Bearer token checks by upstream route and outcome: valid, cached (verified-token "
            "cache hit), invalid, missing, malformed, unavailable (key source down: 503).",
            ("upstream", "outcome"),
            registry=registry,
        )
        self.jwks_fetches = Counter(
            "mcp_gateway_jwks_fetches_total",
            "JWKS fetches by authorization server and outcome (ok, error).",
            ("server", "outcome"),
            registry=registry,
        )
        self.decisions = LoopCounter(
            "mcp_gateway_decisions_total",
            "Policy decisions by route (the upstream's name) and decision (allow, "
            "insufficient_scope, deny).",
            ("route", "decision"),
            registry=registry,
        )
        self.upstream_credentials = Counter(
            "mcp_gateway_upstream_credentials_total",
            "Upstream credentials (`upstream_auth`) by upstream route, kind (mint, exchange, "
            "user_oauth) and outcome: issued (minted, exchanged, or a stored grant used), cached, "
            "refused (403), unavailable (503), elicited (the user was sent to connect), "
            "connected, refreshed, disconnected, failed (a connect or refresh that did not work).",
            ("upstream", "kind", "outcome"),
            registry=registry,
        )
        self.policy_reloads = Counter(
            "mcp_gateway_policy_reloads_total",
            "Policy reloads by outcome (ok, invalid: the old policy stays in force).",
            ("outcome",),
            registry=registry,
        )

    def _add_sessions_and_limits(self, registry: CollectorRegistry) -> None:
        """Sessions and the streams counted against the limits; why the gateway ended or
        refused them."""
        self.active_sessions = Gauge(
            "mcp_gateway_active_sessions",
            "Sessions this replica knows to be open (stateful protocol era).",
            registry=registry,
        )
        self.open_get_streams = Gauge(
            "mcp_gateway_open_get_streams",
            "Response streams counted against the stream limits on this replica: GET streams, "
            "event streams answering POSTs, and POST requests awaiting an answer that may "
            "stream (the name predates POST streams).",
            registry=registry,
        )
        self.streams_closed = Counter(
            "mcp_gateway_streams_closed_total",
            "Response streams the gateway ended, by upstream route and reason: token_expired, "
            "token_revoked, revocation_unavailable (the store could not say: fail closed), "
            "session_ended, client_stalled (the client read nothing for "
            "stalled_stream_timeout).",
            ("upstream", "reason"),
            registry=registry,
        )
        self.session_rejections = Counter(
            "mcp_gateway_session_rejections_total",
            "Requests refused with 404 for their session id, by upstream route and reason: "
            "unknown, foreign (another principal's: a possible hijack), expired, ended.",
            ("upstream", "reason"),
            registry=registry,
        )

    def _add_limits(self, registry: CollectorRegistry) -> None:
        """Calls refused by `policy.limits`, limit checks made without the store, and the
        audit trail's records."""
        self.limited = Counter(
            "mcp_gateway_limited_total",
            "Calls refused with 429 by a limit, by upstream route, limit (the rule's name, or "
            "its index in policy.limits) and kind (rate, concurrency).",
            ("upstream", "limit", "kind"),
            registry=registry,
        )
        self.limit_fallbacks = Counter(
            "mcp_gateway_limit_fallbacks_total",
            "Limit checks made while the store was down, by upstream route and fallback: "
            "local (this replica's counters decided), refuse (answered 503).",
            ("upstream", "fallback"),
            registry=registry,
        )
        self.audit_records = Counter(
            "mcp_gateway_audit_records_total",
            "Audit records written, by kind (request, event, checkpoint, chain_started, "
            "file_started), and records lost to write errors (write_failed).",
            ("outcome",),
            registry=registry,
        )

    def _add_state_store(self, registry: CollectorRegistry) -> None:
        """The shared state store (Redis): failed operations and whether it answers now."""
        self.store_errors = Counter(
            "mcp_gateway_store_errors_total",
            "State store (Redis) operations that failed or timed out, by operation; each one "
            "refused what needed it (503).",
            ("operation",),
            registry=registry,
        )
        self.store_up = Gauge(
            "mcp_gateway_store_up",
            "1 while the last state store operation succeeded, 0 after a failure.",
            registry=registry,
        )
        self.store_up.set(1)

    def count_request(self, upstream: str, method: str, status: int) -> None:
        # The method is the client's choice: fold unknown ones so the cache and labels stay bounded.
        key = (upstream, method if method in KNOWN_METHODS else "other", status)
        child = self._request_children.get(key)
        if child is None:
            child = self.requests.labels(key[0], key[1], str(status))
            self._request_children[key] = child
        child.inc()
