"""`serve` with production logging: every request's access line reaches stderr by the time the
process exits on SIGTERM, in order with the gateway's other lines, though lines are buffered."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import LOG_SINK
from tests.support.configs import PRODUCTION_LOG, gateway_document, write_yaml
from tests.support.http_upstream import RecordingUpstream, recording_upstream
from tests.support.processes import ManagedProcess, free_port

REQUESTS = 60


async def answer(request: web.Request) -> web.StreamResponse:
    return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    async with recording_upstream(answer) as recorded:
        yield recorded


async def test_sigterm_after_a_burst_leaves_every_access_line_in_stderr(
    tmp_path: Path, upstream: RecordingUpstream
) -> None:
    port = free_port()
    up = {"name": "up", "route": "/up/mcp", "url": upstream.url}
    config = write_yaml(tmp_path / "gw.yaml", gateway_document(up, port=port, log=PRODUCTION_LOG))
    url = f"http://127.0.0.1:{port}/up/mcp"
    headers = {"Accept": "application/json, text/event-stream"}
    process = ManagedProcess(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        ready_url=f"http://127.0.0.1:{port}/healthz",
    )
    async with process, aiohttp.ClientSession() as http:
        assert '"event":"gateway_started"' in process.stderr_text()  # written at once

        async def call(n: int) -> str:
            body = {"jsonrpc": "2.0", "id": n, "method": "ping"}
            async with http.post(url, json=body, headers=headers) as response:
                assert response.status == 200
                return response.headers["X-Request-Id"]

        answered = await asyncio.gather(*(call(n) for n in range(REQUESTS)))
        assert await process.stop_async() == 0  # SIGTERM right after the last answer
        text = process.stderr_text()
    LOG_SINK.write(text)  # still scanned for leaked secrets
    events = [json.loads(line) for line in text.splitlines()]
    access = [e for e in events if e["event"] == "request_completed" and e["path"] == "/up/mcp"]
    assert sorted(e["request_id"] for e in access) == sorted(answered)
    names = [e["event"] for e in events]
    assert names.index("gateway_stopping") > max(i for i, e in enumerate(events) if e in access)
    assert names[-1] == "gateway_stopped"
