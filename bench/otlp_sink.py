"""An OTLP/HTTP traces sink on 127.0.0.1 for `run.py --tracing`: it accepts every export (an
empty `ExportTraceServiceResponse`) and keeps nothing, so the gateway's exporter runs as it
would against a collector."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from aiohttp import web


async def serve(port: int) -> None:
    async def handler(request: web.BaseRequest) -> web.Response:
        if request.method != "POST" or request.path != "/v1/traces":
            return web.Response(status=404)
        await request.read()
        return web.Response(body=b"", content_type="application/x-protobuf")

    runner = web.ServerRunner(web.Server(handler), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
