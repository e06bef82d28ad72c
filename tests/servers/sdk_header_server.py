"""An mcp 2.x `MCPServer` that records the `Authorization` header of every request it receives.

Run it as ``python tests/servers/sdk_header_server.py --port N``; it listens on 127.0.0.1 and
serves MCP at ``/mcp`` (plain JSON answers, stateless, so it speaks both protocol eras).
``GET /test/seen`` answers ``{"authorization": [...]}``: the header of each MCP request in
order ("" when absent). The ``authorization`` tool answers the header its own request carried,
so a test sees which token reached the upstream for that very call.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

HOST = "127.0.0.1"

mcp = MCPServer("sdk-header-server", version="1.0.0", log_level="WARNING")
_seen: list[str] = []


@mcp.tool()
def echo(text: str) -> str:
    """Return ``text`` unchanged."""
    return text


@mcp.tool()
def authorization(ctx: Context) -> str:
    """The ``Authorization`` header of this very request ("" when absent)."""
    request: Any = ctx.request_context.request
    return "" if request is None else str(request.headers.get("authorization", ""))


@mcp.custom_route("/healthz", methods=["GET"])  # type: ignore[untyped-decorator]
async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


@mcp.custom_route("/test/seen", methods=["GET"])  # type: ignore[untyped-decorator]
async def seen(request: Request) -> Response:
    return JSONResponse({"authorization": list(_seen)})


class Recorder:
    """ASGI middleware: note the Authorization header of each request to ``/mcp``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/mcp":
            headers = dict(scope["headers"])
            _seen.append(headers.get(b"authorization", b"").decode("latin-1"))
        await self.app(scope, receive, send)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = mcp.streamable_http_app(json_response=True, stateless_http=True, host=HOST)
    config = uvicorn.Config(
        Recorder(app), host=HOST, port=args.port, log_level="warning", timeout_graceful_shutdown=1
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
