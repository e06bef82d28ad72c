"""Run ``tests/servers/sdk_header_server.py`` (an mcp 2.x server that records each request's
``Authorization`` header) on loopback."""

from __future__ import annotations

from pathlib import Path

import httpx2

from .processes import HttpServerProcess, free_port
from .sdk_server import python_server

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = REPO_ROOT / "tests" / "servers" / "sdk_header_server.py"


def sdk_header_server(port: int | None = None, *, ready_timeout: float = 20.0) -> HttpServerProcess:
    """An unstarted header-recording SDK server; enter it (``with`` / ``async with``)."""
    port = free_port() if port is None else port
    return python_server(
        SERVER_SCRIPT, port, [], name="sdk-header-server", ready_timeout=ready_timeout
    )


async def seen_authorization(server: HttpServerProcess) -> list[str]:
    """The ``Authorization`` header of every MCP request the server received, in order."""
    base = server.url.rsplit("/mcp", 1)[0]
    async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as http:
        answer = (await http.get(base + "/test/seen")).json()
    return list(answer["authorization"])
