"""The client side of the benchmark's streaming parts: SSE calls relayed one after another (the
relay's CPU per stream) and many SSE calls held open at once (the gateway's memory per stream),
plus the RSS reader. Driven by bench/run.py (`--sse-stream`, `--open-streams`).
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

PROTOCOL_VERSION = "2026-07-28"
T = TypeVar("T")


def call_body(tool: str, arguments: dict[str, Any]) -> bytes:
    """A stateless MCP 2026-07-28 `tools/call` of `tool`, with a progress token."""
    meta = {
        "progressToken": 1,
        "io.modelcontextprotocol/protocolVersion": PROTOCOL_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    params = {"name": tool, "arguments": arguments, "_meta": meta}
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    return json.dumps(message).encode()


def call_headers(tool: str, authorization: str | None) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": PROTOCOL_VERSION,
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
    }
    if authorization:
        headers["Authorization"] = authorization
    return headers


def sse_messages(body: bytes) -> list[Any]:
    """The JSON `data:` of each event in an SSE body (events end with a blank line; one `data:`
    line per event, as MCP servers write them)."""
    messages = []
    for event in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
        if data:
            messages.append(json.loads(b"\n".join(data)))
    return messages


def stream_problem(body: bytes, events: int) -> str | None:
    """None if `body` holds `events` events ending with the call's result, else what is wrong."""
    try:
        messages = sse_messages(body)
    except ValueError:
        return f"unparsable SSE body: {body[:200]!r}"
    if len(messages) != events:
        return f"{len(messages)} events, expected {events}"
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("id") != 1 or "result" not in last:
        return f"last event is not the result: {str(last)[:200]}"
    return None


def vmrss_kib(status: str) -> int:
    """VmRSS in KiB from the text of /proc/PID/status."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"VmRSS in {unit}")
            return int(value)
    raise ValueError("no VmRSS line (a kernel thread or a zombie?)")


def process_rss_kib(pid: int) -> int:
    return vmrss_kib(Path(f"/proc/{pid}/status").read_text())


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `wanted` (at most the hard limit); the
    processes it starts afterwards inherit it. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


async def relay_streams(url: str, authorization: str | None, streams: int, events: int) -> None:
    """`streams` `stream` calls of `events` events each, one after another on one kept-alive
    connection; raises RuntimeError on any response that is not the whole stream."""
    body = call_body("stream", {"events": events})
    headers = call_headers("stream", authorization)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for _ in range(streams):
            async with session.post(url, data=body, headers=headers) as resp:
                data = await resp.read()
                if resp.status != 200 or not resp.content_type == "text/event-stream":
                    raise RuntimeError(f"{url}: {resp.status} {resp.content_type}: {data[:300]!r}")
                if problem := stream_problem(data, events):
                    raise RuntimeError(f"{url}: {problem}")


async def hold_streams(
    url: str,
    authorization: str | None,
    count: int,
    release_url: str,
    while_open: Callable[[], T],
    wait_s: float = 60,
) -> T:
    """`count` `hold` calls at once, each on its own connection; once every one has its first
    event, `while_open()` runs (in a thread), then the upstream is told to finish them and each is
    read to its result. The connections are closed when this returns `while_open()`'s value."""
    body = call_body("hold", {})
    headers = call_headers("hold", authorization)
    opened = 0
    all_open = asyncio.Event()
    finish = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=wait_s)

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal opened
        async with session.post(url, data=body, headers=headers) as resp:
            if resp.status != 200 or resp.content_type != "text/event-stream":
                text = await resp.read()
                raise RuntimeError(f"{url}: {resp.status} {resp.content_type}: {text[:300]!r}")
            first = await resp.content.readuntil(b"\n\n")
            opened += 1
            if opened == count:
                all_open.set()
            await finish.wait()
            if problem := stream_problem(first + await resp.read(), 2):
                raise RuntimeError(f"{url}: {problem}")

    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(count)]
        waiter = asyncio.create_task(all_open.wait())
        try:
            done, _ = await asyncio.wait(
                [waiter, *tasks], timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
            )
            while waiter not in done:
                for task in done:
                    task.result()  # a failed call raises here
                if not done:
                    raise RuntimeError(f"{opened} of {count} streams open after {wait_s:.0f}s")
                pending = [t for t in [waiter, *tasks] if not t.done()]
                done, _ = await asyncio.wait(
                    pending, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
                )
            value = await asyncio.to_thread(while_open)
            finish.set()
            async with session.post(release_url) as resp:
                await resp.read()
            await asyncio.wait_for(asyncio.gather(*tasks), wait_s)
            return value
        finally:
            waiter.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(waiter, *tasks, return_exceptions=True)


def merge_streaming(recorded: dict[str, Any], streaming_run: dict[str, Any]) -> dict[str, Any]:
    """`recorded` (a full run's results) with the streaming figures of `streaming_run` (a
    --streams-only run) put in: its `sse_stream` and `open_streams`, its targets in place of the
    recorded streaming targets, and when, where and how it ran under `streaming_run`."""
    labels = {t["target"] for t in streaming_run["targets"]}
    kept = [t for t in recorded.get("targets", []) if t["target"] not in labels]
    when = {key: streaming_run[key] for key in ("date", "machine", "settings")}
    return recorded | {
        "targets": kept + streaming_run["targets"],
        "sse_stream": streaming_run["sse_stream"],
        "open_streams": streaming_run["open_streams"],
        "streaming_run": when,
    }
