"""Shared fixtures: start the real gateway (the same listener code as `serve`) on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.config import GatewayConfig
from gateway.web.app import create_app
from gateway.web.server import RunningGateway, start_gateway


class Gateway:
    """A running gateway and the URLs to reach it."""

    def __init__(self, running: RunningGateway, config: GatewayConfig) -> None:
        self.running = running
        self.config = config
        self.base = f"http://127.0.0.1:{running.port}"

    def url(self, path: str) -> str:
        return self.base + path


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway_for() -> AsyncIterator[StartGateway]:
    """`await start_gateway_for({"name": ..., "route": ..., "url": ...}, ..., server={...})`."""
    started: list[RunningGateway] = []

    async def start(*upstreams: dict[str, Any], server: dict[str, Any] | None = None) -> Gateway:
        config = GatewayConfig(
            server={"host": "127.0.0.1", "port": 0, **(server or {})},
            log={"level": "debug", "format": "json"},
            upstreams=list(upstreams),
        )
        running = await start_gateway(config, create_app(config, registry=CollectorRegistry()))
        started.append(running)
        return Gateway(running, config)

    yield start
    for running in started:
        await running.stop()
