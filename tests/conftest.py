"""Shared fixtures: start the real gateway (the same listener code as `serve`) on a free port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.config import GatewayConfig
from gateway.config.fields import LogFormat, LogLevel
from gateway.config.server import LogSettings
from gateway.observability.logging import configure_logging
from gateway.web.app import create_app
from gateway.web.server import RunningGateway, start_gateway
from tests.support.configs import FROM_PORT, PublicUrl, gateway_document, validated
from tests.support.local_issuer import LocalIssuer
from tests.support.processes import free_port
from tests.support.secrets import USED_SECRETS


class LogSink:
    """Where every in-process gateway log line of the suite goes, test by test."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def take(self) -> str:
        text, self.parts = "".join(self.parts), []
        return text


LOG_SINK = LogSink()


@pytest.fixture(scope="session", autouse=True)
def _gateway_logging() -> None:
    configure_logging(LogSettings(level=LogLevel.DEBUG, format=LogFormat.JSON), stream=LOG_SINK)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def no_secret_in_logs() -> Iterator[None]:
    """Fails any test whose gateway logs contain a token or secret that a test used."""
    LOG_SINK.take()
    yield
    logged = LOG_SINK.take()
    leaked = [secret[:12] + "..." for secret in USED_SECRETS if secret in logged]
    assert not leaked, f"secrets in the gateway's log lines: {leaked}"


@pytest.fixture
async def issuer() -> AsyncIterator[LocalIssuer]:
    """A small authorization server on loopback (metadata, JWKS, introspection) with run-time
    keys: tokens come from `issuer.mint(issuer.claims(resource, ...))`."""
    server = LocalIssuer()
    await server.start()
    yield server
    await server.stop()


def gateway_log() -> str:
    """The log lines written so far in the current test (without consuming them)."""
    return "".join(LOG_SINK.parts)


class Gateway:
    """A running gateway and the URLs to reach it."""

    def __init__(self, running: RunningGateway, config: GatewayConfig) -> None:
        self.running = running
        self.config = config
        self.base = f"http://127.0.0.1:{running.port}"

    def url(self, path: str) -> str:
        return self.base + path

    @contextlib.asynccontextmanager
    async def raw_connection(
        self,
    ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        """A plain TCP connection to the gateway, for tests that write HTTP bytes themselves."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.running.port)
        try:
            yield reader, writer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway_for() -> AsyncIterator[StartGateway]:
    """`await start_gateway_for({"name": ..., "route": ..., "url": ...}, ..., auth={...})`.

    The keywords are `tests.support.configs.gateway_document`'s; `port` defaults to a free one.
    Without `auth` (the config's `auth` section), upstreams are anonymous (transport tests); with
    it, they require tokens unless they say otherwise.
    """
    started: list[RunningGateway] = []

    async def start(
        *upstreams: dict[str, Any],
        port: int | None = None,
        public_url: str | PublicUrl | None = FROM_PORT,
        server: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
        scopes: dict[str, Any] | None = None,
        sessions: dict[str, Any] | None = None,
        store: dict[str, Any] | None = None,
        tracing: dict[str, Any] | None = None,
    ) -> Gateway:
        config = validated(
            gateway_document(
                *upstreams,
                port=free_port() if port is None else port,
                public_url=public_url,
                server=server,
                auth=auth,
                scopes=scopes,
                sessions=sessions,
                store=store,
                tracing=tracing,
            )
        )
        running = await start_gateway(config, create_app(config, registry=CollectorRegistry()))
        started.append(running)
        return Gateway(running, config)

    yield start
    for running in started:
        await running.stop()
