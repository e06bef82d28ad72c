"""Run the TypeScript MCP client (`@modelcontextprotocol/client`, pinned in ``tests/node``).

``tests/node/ts-client/facade-client.mjs`` connects to an OAuth-protected MCP URL with the SDK's
own OAuth code, signs in and approves on the gateway's pages headlessly, hands the callback to
``transport.finishAuth`` (which checks RFC 9207 ``iss``), then lists tools and calls one. It
prints one JSON line; `run_ts_client` returns it parsed. The script runs as a child process
awaited without blocking the event loop (the gateway under test runs on it), and is killed by
its PID if it overruns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any

from .node import NODE_DIR, ensure_node_packages, node_executable
from .oauth_client import loopback_redirect_uri

SCRIPT = NODE_DIR / "ts-client" / "facade-client.mjs"
PACKAGE = "@modelcontextprotocol/client"
RUN_TIMEOUT = 60.0


class TsClientError(RuntimeError):
    """The script failed unexpectedly (non-zero exit, no JSON line, or a timeout)."""


async def run_ts_client(
    mcp_url: str,
    *,
    username: str,
    password: str,
    tamper_iss: bool = False,
    tool: str = "echo",
    text: str = "hello",
    timeout: float = RUN_TIMEOUT,
) -> dict[str, Any]:
    """Run the TypeScript client against ``mcp_url`` and return its JSON result line.

    With ``tamper_iss``, ``"x"`` is appended to the callback's ``iss`` before ``finishAuth``;
    the result then carries ``refused`` (the error the SDK threw) instead of tools and a call.
    """
    ensure_node_packages()
    env = dict(os.environ)
    env.update(
        TS_CLIENT_USERNAME=username,
        TS_CLIENT_PASSWORD=password,
        TS_CLIENT_TOOL=tool,
        TS_CLIENT_TEXT=text,
    )
    argv = [node_executable(), str(SCRIPT), mcp_url, loopback_redirect_uri()]
    if tamper_iss:
        argv.append("--tamper-iss")
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=str(NODE_DIR),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise TsClientError(f"{SCRIPT.name} did not finish within {timeout:g}s") from None
    err = stderr.decode("utf-8", errors="replace").strip()
    lines = stdout.decode("utf-8", errors="replace").strip().splitlines()
    if process.returncode != 0 or not lines:
        raise TsClientError(f"{SCRIPT.name} exited with {process.returncode}:\n{err[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result
