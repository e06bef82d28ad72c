"""The OpenTelemetry tracer of a gateway with `tracing` on: its provider, sampler, batch exporter
and trace context propagation (W3C Trace Context).

Imported only when tracing is on (`gateway.web.app`), so a gateway without the optional `otel`
extra runs as long as tracing is off. The provider is the gateway's own, never the process-wide
global one. Spans go to a batch processor: a request never waits on the collector; when the
collector is slow or down the queue drops spans, and a warning is logged at most once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from ipaddress import ip_address

from aiohttp import web
from multidict import MultiMapping
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, Tracer, get_current_span, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import __version__
from gateway.config.tracing import TracingSettings
from gateway.observability.logging import get_logger

log = get_logger("gateway.tracing")

WARN_INTERVAL = 60.0
"""Seconds between two warnings about failed exports."""
_QUIETED = (
    "opentelemetry.exporter",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.trace.export",
)
"""The exporter's and batch processor's own loggers: one warning per interval replaces them
(they would log per batch, with the collector's answer)."""


class Tracing:
    """The gateway's tracer, and whose trace context it accepts."""

    def __init__(self, settings: TracingSettings, exporter: SpanExporter | None = None) -> None:
        resource = Resource.create(
            {"service.name": settings.service_name, "service.version": __version__}
        )
        sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
        self.provider = TracerProvider(sampler=sampler, resource=resource)
        self._exporter = GuardedExporter(exporter or _otlp_exporter(settings))
        self.processor = BatchSpanProcessor(
            self._exporter,
            max_queue_size=settings.max_queue_size,
            schedule_delay_millis=settings.schedule_delay * 1000,
            max_export_batch_size=settings.max_export_batch_size,
            export_timeout_millis=settings.export_timeout * 1000,
        )
        self.provider.add_span_processor(self.processor)
        self.tracer: Tracer = self.provider.get_tracer("mcp-auth-gateway", __version__)
        self.propagator = TraceContextTextMapPropagator()
        self._trust_all = settings.trusts_all()
        self._trusted = [] if settings.trusted_clients == "all" else settings.trusted_clients
        self._shutdown_timeout = settings.shutdown_timeout
        for name in _QUIETED:
            logging.getLogger(name).setLevel(logging.CRITICAL)

    def trusts(self, client: str | None) -> bool:
        """Whether the client at this address (after trusted proxies) may continue its trace."""
        if self._trust_all:
            return True
        if client is None or not self._trusted:
            return False
        try:
            address = ip_address(client)
        except ValueError:
            return False
        return any(address in network for network in self._trusted)

    def parent_of(self, headers: MultiMapping[str]) -> Context | None:
        """A trusted client's trace context in its headers (None: none). A `traceparent`
        given twice is none (W3C Trace Context section 3.2); `tracestate` lines combine."""
        parents = headers.getall("traceparent", ())
        if len(parents) != 1:
            return None
        carrier = {"traceparent": parents[0]}
        states = headers.getall("tracestate", ())
        if states:
            carrier["tracestate"] = ",".join(states)
        return self._valid(self.propagator.extract(carrier))

    def meta_parent(self, payload: object) -> Context | None:
        """A trusted client's trace context in a request's `params._meta` (MCP 2026-07-28,
        OpenTelemetry trace context); None for a batch, or none there."""
        params = payload.get("params") if isinstance(payload, dict) else None
        meta = params.get("_meta") if isinstance(params, dict) else None
        if not isinstance(meta, dict) or not isinstance(meta.get("traceparent"), str):
            return None
        carrier = {"traceparent": meta["traceparent"]}
        if isinstance(meta.get("tracestate"), str):
            carrier["tracestate"] = meta["tracestate"]
        return self._valid(self.propagator.extract(carrier))

    @staticmethod
    def _valid(context: Context) -> Context | None:
        return context if get_current_span(context).get_span_context().is_valid else None

    def carrier(self, span: Span) -> dict[str, str]:
        """`traceparent` (and `tracestate`) naming `span` as the parent, for an upstream."""
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=set_span_in_context(span))
        return carrier

    async def close_at_cleanup(self, app: web.Application) -> AsyncIterator[None]:
        """At shutdown, export the spans that have ended, for `shutdown_timeout` at most."""
        yield
        await self.shutdown()

    async def shutdown(self) -> None:
        """Flush and stop the exporter in a thread of its own (it is synchronous), waiting
        `shutdown_timeout` at most: exports not begun by then are dropped, and a thread still
        busy with one is a daemon, which does not hold up the exit."""
        self._exporter.stop_at(time.monotonic() + self._shutdown_timeout)
        worker = threading.Thread(target=self._stop, name="trace-shutdown", daemon=True)
        worker.start()
        await asyncio.to_thread(worker.join, self._shutdown_timeout)

    def _stop(self) -> None:
        self.processor.shutdown()  # type: ignore[no-untyped-call]
        self.provider.shutdown()


def _otlp_exporter(settings: TracingSettings) -> OTLPSpanExporter:
    headers = {name: value.get_secret_value() for name, value in settings.headers.items()}
    return OTLPSpanExporter(
        endpoint=settings.endpoint, headers=headers, timeout=settings.export_timeout
    )


class GuardedExporter(SpanExporter):
    """An exporter whose failures are never raised into the batch processor and are logged
    at most once per `WARN_INTERVAL` (with how many spans were lost since the last warning)."""

    def __init__(self, inner: SpanExporter, interval: float = WARN_INTERVAL) -> None:
        self._inner = inner
        self._interval = interval
        self._lock = threading.Lock()
        self._warned_at: float | None = None
        self._lost = 0
        self._stop_at: float | None = None

    def stop_at(self, deadline: float) -> None:
        """Begin no export after `deadline` (`time.monotonic()`): shutdown is bounded."""
        self._stop_at = deadline

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._stop_at is not None and time.monotonic() >= self._stop_at:
            result = SpanExportResult.FAILURE
        else:
            try:
                result = self._inner.export(spans)
            except Exception:  # the collector's problem is never the request's
                result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self._failed(len(spans))
        return result

    def _failed(self, spans: int) -> None:
        with self._lock:
            self._lost += spans
            now = time.monotonic()
            if self._warned_at is not None and now - self._warned_at < self._interval:
                return
            self._warned_at, lost, self._lost = now, self._lost, 0
        log.warning("trace_export_failed", spans_lost=lost)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
