"""Starting and stopping the HTTP listeners, shared by the CLI and the tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from gateway.config.model import GatewayConfig
from gateway.observability.line_writer import LineWriter
from gateway.web.app import create_app, create_metrics_app
from gateway.web.keys import LANES_KEY, METRICS_KEY
from gateway.web.listener import DeadlineSite
from gateway.web.memory import memory_release
from gateway.web.plane.lanes import Plane


@dataclass(slots=True)
class RunningGateway:
    app: web.Application
    runners: list[web.AppRunner]
    port: int
    metrics_port: int | None

    async def stop(self) -> None:
        """Close the listeners and finish open responses, then write out buffered log lines
        (the access lines of the last requests)."""
        try:
            for runner in reversed(self.runners):
                await runner.cleanup()
        finally:
            LineWriter.flush_all()


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        return int(address[1])
    raise RuntimeError("listener has no address")


async def start_gateway(
    config: GatewayConfig, app: web.Application | None = None
) -> RunningGateway:
    """Listen on the configured host and port (0 picks a free one) and serve `app`.

    A client that disconnects cancels its handler (`handler_cancellation`), which closes the
    upstream connection of that exchange. aiohttp's access log is off: the gateway writes its own.
    The main listener gives each request `server.header_timeout` seconds from its first byte to
    send its headers (`DeadlineSite`); idle keep-alive connections close after
    `server.keepalive_timeout`. Request bodies are never decompressed: they are relayed as sent.
    """
    app = app if app is not None else create_app(config)
    server = config.server
    resource_server = config.token_validation()
    max_token = resource_server.max_token_bytes if resource_server else 0
    # Room for the largest accepted token, so an oversized one gets the gateway's own
    # 401 invalid_token rather than the HTTP parser's 400.
    max_field = max(8190, 2 * max_token + 1024)
    main = web.AppRunner(
        app,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=server.shutdown_timeout,
        keepalive_timeout=server.keepalive_timeout,
        auto_decompress=False,
        max_field_size=max_field,
    )
    running = RunningGateway(app, [], 0, None)
    try:
        await main.setup()
        running.runners.append(main)
        lanes = app[LANES_KEY]
        site = DeadlineSite(
            main,
            server.host,
            server.port,
            header_timeout=server.header_timeout,
            keepalive_timeout=server.keepalive_timeout,
            shutdown_timeout=server.shutdown_timeout,
            plane=Plane(lanes, max_field) if lanes else None,
            release=memory_release(asyncio.get_running_loop()),
        )
        await site.start()
        running.port = _bound_port(main)
        if server.metrics_port is not None:
            metrics = web.AppRunner(
                create_metrics_app(app[METRICS_KEY]),
                access_log=None,
                keepalive_timeout=server.keepalive_timeout,
            )
            await metrics.setup()
            running.runners.append(metrics)
            await web.TCPSite(metrics, server.host, server.metrics_port).start()
            running.metrics_port = _bound_port(metrics)
    except BaseException:
        await running.stop()
        raise
    return running
