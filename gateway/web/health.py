"""Liveness, readiness and the metrics endpoint."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.store.kv import StoreUnavailableError
from gateway.web.keys import METRICS_KEY, ROUTES_KEY, STORE_KEY

PROBE_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and serving HTTP."""
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    """Config loaded, every upstream accepts connections and the shared store (if any) answers;
    503 names what does not."""
    routes = request.app[ROUTES_KEY]
    results = await asyncio.gather(*(route.probe(PROBE_TIMEOUT) for route in routes))
    upstreams = {
        route.name: ("ok" if ok else "unreachable")
        for route, ok in zip(routes, results, strict=True)
    }
    ready = all(results)
    body: dict[str, object] = {"upstreams": upstreams}
    store = request.app.get(STORE_KEY)
    if store is not None:
        try:
            await store.ping()
            body["store"] = "ok"
        except StoreUnavailableError:
            body["store"] = "unavailable"
            ready = False
    return web.json_response(
        {"status": "ready" if ready else "not_ready", **body},
        status=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of this app's registry."""
    body = generate_latest(request.app[METRICS_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
