"""Serves one JWKS document (the benchmark's token signing keys) at /jwks on 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

from aiohttp import web


async def serve(port: int, jwks: bytes) -> None:
    async def handler(request: web.BaseRequest) -> web.Response:
        if request.path != "/jwks":
            return web.Response(status=404)
        return web.Response(body=jwks, content_type="application/json")

    runner = web.ServerRunner(web.Server(handler), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jwks", type=Path, required=True, help="file holding the public JWKS")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.jwks.read_bytes()))


if __name__ == "__main__":
    main()
