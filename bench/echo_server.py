"""The speed ceiling: a minimal JSON-RPC echo server on aiohttp's low-level server.

Run: `python bench/echo_server.py --port 9003`. No routing, no middleware, stock asyncio loop: any
POST gets `{"jsonrpc": "2.0", "id": <request id>, "result": <request params>}` as
`application/json`. It does the least an HTTP+JSON upstream can do on the same stack the gateway
is built on, so a proxy in front of it cannot be faster than it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from aiohttp import web


async def handle(request: web.BaseRequest) -> web.StreamResponse:
    if request.method != "POST":
        return web.Response(status=405, headers={"Allow": "POST"})
    try:
        message: Any = json.loads(await request.read())
    except ValueError:
        message = None
    if not isinstance(message, dict):
        error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}
        return web.Response(status=400, body=json.dumps(error), content_type="application/json")
    params = message.get("params")
    reply = {
        "jsonrpc": "2.0",
        "id": message.get("id"),
        "result": params if isinstance(params, dict) else {"params": params},
    }
    return web.Response(
        body=json.dumps(reply, separators=(",", ":")), content_type="application/json"
    )


async def serve(port: int) -> None:
    runner = web.ServerRunner(web.Server(handle), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
