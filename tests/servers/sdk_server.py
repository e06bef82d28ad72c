"""A real MCP server built on the official `mcp` 2.x SDK, for end-to-end tests.

Run it as ``python tests/servers/sdk_server.py --port N [--json-response]``; it listens on
127.0.0.1 only and serves MCP at ``/mcp``. It speaks 2026-07-28 to clients that probe
``server/discover`` and 2025-11-25 (stateful, ``Mcp-Session-Id``) to clients that ``initialize``.

``slow_progress`` reports its first progress step and then blocks until it is released, so a test
can observe a progress notification arriving *before* the result without sleeping. Release it
with the ``release`` tool (a separate MCP request, possibly through the gateway) or with
``POST /test/release?key=...`` straight to this server. Gates are latches kept in this process:
a release that arrives before its ``slow_progress`` call is remembered, so there is no race.
"""

from __future__ import annotations

import argparse
import asyncio

import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

HOST = "127.0.0.1"
# Kept in sync with tests/support/sdk_server.py (the smoke test checks both).
GREETING_URI = "test://greeting"
GREETING_TEXT = "Hello from the SDK test server"

mcp = MCPServer("sdk-test-server", version="1.0.0", log_level="WARNING")

# One process, one event loop: every request's handler runs on it, whichever transport
# session (or none, in the stateless 2026-07-28 era) the request belongs to.
_gates: dict[str, asyncio.Event] = {}


def _gate(key: str) -> asyncio.Event:
    return _gates.setdefault(key, asyncio.Event())


def release_gate(key: str) -> None:
    """Open the gate for ``key``; a ``slow_progress`` call waiting on it (now or later) finishes."""
    _gate(key).set()


@mcp.tool()
def echo(text: str) -> str:
    """Return ``text`` unchanged."""
    return text


@mcp.tool()
def add(a: int, b: int) -> int:
    """Return ``a + b``."""
    return a + b


@mcp.tool()
def fail(message: str = "deliberate failure") -> str:
    """Always fail with a tool error (``isError: true``) carrying ``message``."""
    raise ToolError(message)


@mcp.tool()
async def slow_progress(steps: int, ctx: Context, key: str = "default") -> str:
    """Report progress 1/steps, wait until ``release(key)``, then report the rest and finish."""
    if steps < 1:
        raise ToolError("steps must be at least 1")
    gate = _gate(key)
    await ctx.report_progress(1, steps, "started")
    await gate.wait()
    _gates.pop(key, None)
    for step in range(2, steps + 1):
        await ctx.report_progress(step, steps)
    return f"completed {steps} steps"


@mcp.tool()
def release(key: str = "default") -> str:
    """Release the ``slow_progress`` call waiting on ``key``."""
    release_gate(key)
    return f"released {key}"


@mcp.resource(GREETING_URI, mime_type="text/plain")
def greeting() -> str:
    """A fixed text resource."""
    return GREETING_TEXT


@mcp.prompt()
def greet(name: str) -> str:
    """Ask the model to greet ``name``."""
    return f"Please greet {name} warmly."


# MCPServer.custom_route is unannotated in mcp 2.3, hence the ignores.
@mcp.custom_route("/healthz", methods=["GET"])  # type: ignore[untyped-decorator]
async def healthz(request: Request) -> Response:
    """Readiness probe for the test harness; touches no MCP session state."""
    return JSONResponse({"status": "ok"})


@mcp.custom_route("/test/release", methods=["POST"])  # type: ignore[untyped-decorator]
async def release_route(request: Request) -> Response:
    """Out-of-band release for tests that must not go through the gateway."""
    key = request.query_params.get("key", "default")
    release_gate(key)
    return JSONResponse({"released": key})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--json-response",
        action="store_true",
        help="answer requests with plain JSON instead of an SSE stream",
    )
    parser.add_argument(
        "--stateless",
        action="store_true",
        help="open no Mcp-Session-Id sessions, not even on initialize",
    )
    args = parser.parse_args(argv)
    app = mcp.streamable_http_app(
        json_response=args.json_response, stateless_http=args.stateless, host=HOST
    )
    config = uvicorn.Config(
        app,
        host=HOST,
        port=args.port,
        log_level="warning",
        # An open SSE stream (a blocked slow_progress) must not stall shutdown.
        timeout_graceful_shutdown=1,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
