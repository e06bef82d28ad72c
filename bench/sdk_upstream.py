"""A real MCP server on the official `mcp` 2.x Python SDK, used as a benchmark upstream.

Run: `python bench/sdk_upstream.py --port 9001 --mode json|sse`. Serves streamable HTTP on
`http://127.0.0.1:PORT/mcp` with one cheap tool, `echo(text)`.

In SSE mode the SDK answers a handler that finishes without emitting anything with plain
`application/json` (it only commits to `text/event-stream` once a notification is sent or 15 s
pass). So that the SSE row really streams, `echo` reports one progress notification when the
request carries a `progressToken` in `params._meta`; the benchmark sends one to the SSE upstream
only (in JSON mode the SDK drops notifications, and without a token the call is a no-op).
"""

from __future__ import annotations

import argparse

from mcp.server import MCPServer
from mcp.server.mcpserver import Context


def build_server() -> MCPServer:
    server = MCPServer("bench-upstream", log_level="WARNING")

    @server.tool()
    async def echo(text: str, ctx: Context) -> str:
        """Return `text` unchanged."""
        await ctx.report_progress(1.0, 1.0)  # a no-op unless the request carries a progressToken
        return text

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("json", "sse"), default="json")
    args = parser.parse_args()
    build_server().run(
        "streamable-http",
        host="127.0.0.1",
        port=args.port,
        json_response=args.mode == "json",
    )


if __name__ == "__main__":
    main()
