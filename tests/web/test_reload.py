"""Policy hot reload: editing the config file changes decisions without a restart; an invalid
file keeps the old policy in force."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.web.app import create_app
from gateway.web.keys import RELOADER_KEY
from gateway.web.server import start_gateway
from tests.support.configs import gateway_document, validated, write_yaml
from tests.support.http_upstream import recording_upstream
from tests.support.local_issuer import LocalIssuer
from tests.support.processes import free_port


async def ok(request: web.Request) -> web.StreamResponse:
    return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})


async def eventually(
    probe: Callable[[], Awaitable[object]], expected: object, seconds: float = 10
) -> object:
    """Poll `probe` until it returns `expected` (or time runs out); return the last value."""
    deadline = time.monotonic() + seconds
    while (value := await probe()) != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return value


async def test_policy_file_changes_apply_without_restart_and_bad_ones_are_refused(
    tmp_path: Path, issuer: LocalIssuer
) -> None:
    async with recording_upstream(ok) as upstream:
        port = free_port()
        path = tmp_path / "gateway.yaml"

        def write(write_scope: str) -> dict[str, Any]:
            policy = {"tools": {"write_file": [write_scope]}}
            files = {"name": "files", "route": "/files/mcp", "url": upstream.url,
                     "scopes": ["mcp:tools"], "policy": policy}  # fmt: skip
            auth = {"resource_server": {"authorization_servers": [issuer.auth_server()]}}
            reload = {"reload_interval": 0.05}
            document = gateway_document(files, port=port, server=reload, auth=auth)
            write_yaml(path, document)
            return document

        config = validated(write("files:write"))
        app = create_app(config, registry=CollectorRegistry(), config_path=path)
        running = await start_gateway(config, app)
        base = f"http://127.0.0.1:{port}"
        token = issuer.mint(issuer.claims(base + "/files/mcp", scope="mcp:tools files:read"))
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "write_file"}}

        async with aiohttp.ClientSession() as http:

            async def status() -> int:
                async with http.post(
                    base + "/files/mcp", json=body, headers={"Authorization": f"Bearer {token}"}
                ) as resp:
                    return resp.status

            async def refused_reloads() -> bool:
                async with http.get(base + "/metrics") as resp:
                    text = await resp.text()
                return 'mcp_gateway_policy_reloads_total{outcome="invalid"} 1.0' in text

            try:
                assert await status() == 403
                write("files:read")  # the file changes: the watcher reloads it
                assert await eventually(status, 200) == 200

                path.write_text("upstreams: [not: valid")  # broken YAML
                assert await eventually(refused_reloads, True) is True
                assert await status() == 200  # the previous policy is still in force

                write("files:admin")  # a SIGHUP-style reload works too
                assert await app[RELOADER_KEY].reload() is True
                assert await status() == 403
            finally:
                await running.stop()
