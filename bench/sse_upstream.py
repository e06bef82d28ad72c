"""An MCP-like upstream that answers a `tools/call` with an SSE stream, for the streaming parts
of the benchmark (relay cost per stream, memory per open stream).

Run: `python bench/sse_upstream.py --port 9004`. aiohttp's low-level server (`web.Server`, no
routing or middleware, stock asyncio loop). Any POST carrying a JSON-RPC `tools/call` gets
`text/event-stream`:

- tool `stream`: `arguments.events` events (default 1,000): `notifications/progress` messages,
  then the call's result, each written as its own event with its own `write` (an MCP server
  streaming progress);
- tool `hold`: one progress event at once (the response has started), then nothing until
  `POST /release`; then the result. `GET /held` answers how many such streams are open.

Progress events carry the request's `_meta.progressToken` (default 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterator
from typing import Any

from aiohttp import web

DEFAULT_EVENTS = 1000


def sse_event(message: dict[str, Any]) -> bytes:
    """One SSE `message` event carrying a JSON-RPC message on a single `data:` line."""
    return b"event: message\ndata: " + json.dumps(message, separators=(",", ":")).encode() + b"\n\n"


def progress(token: object, step: int, total: int) -> dict[str, Any]:
    params = {"progressToken": token, "progress": step, "total": total, "message": f"step {step}"}
    return {"jsonrpc": "2.0", "method": "notifications/progress", "params": params}


def result(request_id: object, events: int) -> dict[str, Any]:
    text = f"streamed {events} events"
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "result": {"content": [{"type": "text", "text": text}]},
    }


def stream_events(request_id: object, token: object, events: int) -> Iterator[bytes]:
    """`events` SSE events: `events - 1` progress notifications, then the result."""
    for step in range(1, events):
        yield sse_event(progress(token, step, events))
    yield sse_event(result(request_id, events))


class Holds:
    """The `hold` streams open now, and the event that lets them finish."""

    def __init__(self) -> None:
        self.open = 0
        self.release = asyncio.Event()


def call_of(body: bytes) -> tuple[object, str, dict[str, Any], object] | None:
    """(id, tool name, arguments, progress token) of a JSON-RPC `tools/call`, else None."""
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("method") != "tools/call":
        return None
    params = message.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("name"), str):
        return None
    arguments = params.get("arguments")
    meta = params.get("_meta")
    token = meta.get("progressToken", 1) if isinstance(meta, dict) else 1
    args = arguments if isinstance(arguments, dict) else {}
    return message.get("id"), params["name"], args, token


async def handle(request: web.BaseRequest, holds: Holds) -> web.StreamResponse:
    if request.method == "GET" and request.path == "/held":
        return web.Response(text=str(holds.open))
    if request.method == "POST" and request.path == "/release":
        holds.release.set()
        return web.Response(text="released")
    if request.method != "POST":
        return web.Response(status=405, headers={"Allow": "POST"})
    call = call_of(await request.read())
    if call is None or call[1] not in ("stream", "hold"):
        error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32602, "message": "bad call"}}
        return web.Response(status=400, body=json.dumps(error), content_type="application/json")
    request_id, tool, arguments, token = call
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    if tool == "stream":
        events = arguments.get("events", DEFAULT_EVENTS)
        for event in stream_events(request_id, token, int(events)):
            await response.write(event)
    else:
        if holds.release.is_set():  # a new round of holds after a release
            holds.release = asyncio.Event()
        release = holds.release
        holds.open += 1
        try:
            await response.write(sse_event(progress(token, 1, 2)))
            await release.wait()
            await response.write(sse_event(result(request_id, 2)))
        finally:
            holds.open -= 1
    await response.write_eof()
    return response


async def serve(port: int) -> None:
    holds = Holds()

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return await handle(request, holds)

    runner = web.ServerRunner(web.Server(handler), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
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
