"""Typed keys for application and request state."""

from __future__ import annotations

from aiohttp import web

from gateway.auth.authenticator import HttpSessionHolder
from gateway.compiler import CompiledConfig
from gateway.config.model import GatewayConfig
from gateway.observability.metrics import GatewayMetrics
from gateway.policy.compiled import PolicyStore
from gateway.store.kv import KeyValueStore
from gateway.web.exchange import RequestContext
from gateway.web.plane.lanes import Lane
from gateway.web.reload import PolicyReloader
from gateway.web.route import Route

CONFIG_KEY = web.AppKey("config", GatewayConfig)
COMPILED_KEY = web.AppKey("compiled_config", CompiledConfig)
METRICS_KEY = web.AppKey("metrics", GatewayMetrics)
ROUTES_KEY = web.AppKey("routes", tuple[Route, ...])
CONTEXT_KEY = web.RequestKey("context", RequestContext)
HTTP_KEY = web.AppKey("outbound_http", HttpSessionHolder)
POLICIES_KEY = web.AppKey("policies", PolicyStore)
RELOADER_KEY = web.AppKey("policy_reloader", PolicyReloader)
LANES_KEY = web.AppKey("lanes", dict[bytes, Lane])
"""The routes the lean data plane serves, by exact raw path (none: aiohttp serves all)."""
STORE_KEY = web.AppKey("shared_store", KeyValueStore)
"""The shared state store, when one is configured (Redis): readiness pings it."""
