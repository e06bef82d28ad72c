"""Run ``tests/servers/sdk_server.py`` (an mcp 2.x `MCPServer`) as a child process on loopback."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import aiohttp

from .processes import HttpServerProcess, ManagedProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = REPO_ROOT / "tests" / "servers" / "sdk_server.py"

# Tool names and fixed values the server exposes; import them instead of repeating literals.
SDK_TOOLS = frozenset({"echo", "add", "fail", "slow_progress", "release"})
GREETING_URI = "test://greeting"
GREETING_TEXT = "Hello from the SDK test server"
FAIL_PREFIX = "Error executing tool fail: "


def sdk_server(
    port: int | None = None,
    *,
    json_response: bool = False,
    stateless: bool = False,
    ready_timeout: float = 20.0,
) -> HttpServerProcess:
    """An unstarted SDK test server; enter it (``with`` / ``async with``).

    ``json_response=True`` makes it answer with plain JSON bodies; otherwise it streams SSE,
    which is the only mode that delivers progress notifications. ``stateless=True`` opens no
    ``Mcp-Session-Id`` session, even on ``initialize``. The handle's ``url`` is the MCP
    endpoint, ``http://127.0.0.1:PORT/mcp``.
    """
    port = free_port() if port is None else port
    args = ["--json-response"] if json_response else []
    name = "sdk-server-json" if json_response else "sdk-server-sse"
    if stateless:
        args.append("--stateless")
        name += "-stateless"
    return python_server(SERVER_SCRIPT, port, args, name=name, ready_timeout=ready_timeout)


def python_server(
    script: Path, port: int, args: list[str], *, name: str, ready_timeout: float
) -> HttpServerProcess:
    """An unstarted Python MCP server script on 127.0.0.1:`port`, ready when /healthz answers,
    run with a minimal environment (nothing secret from ours)."""
    argv = [sys.executable, str(script), "--port", str(port), *args]
    env = {key: value for key, value in os.environ.items() if key in {"PATH", "LANG", "LC_ALL"}}
    env["PYTHONUNBUFFERED"] = "1"
    process = ManagedProcess(
        argv,
        env=env,
        cwd=REPO_ROOT,
        ready_url=f"http://127.0.0.1:{port}/healthz",
        ready_timeout=ready_timeout,
        name=name,
    )
    return HttpServerProcess(process, port=port)


async def release_slow_progress(base_url: str, key: str = "default") -> None:
    """Release a blocked ``slow_progress(key=key)`` through the server's out-of-band route.

    ``base_url`` is the server's own ``http://127.0.0.1:PORT`` (not a gateway's): this bypasses
    MCP entirely. To release through MCP, call the ``release`` tool instead.
    """
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base_url}/test/release", params={"key": key}) as response,
    ):
        response.raise_for_status()
