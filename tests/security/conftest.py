"""Shared by the attack-class tests: an upstream that records what reaches it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.support.http_upstream import RecordingUpstream, recording_upstream


async def answer_ok(request: web.Request) -> web.StreamResponse:
    """An empty JSON-RPC result for every request, answering a batch with an array."""
    try:
        body = json.loads(await request.read())
    except ValueError:
        body = {}
    if isinstance(body, list):
        return web.json_response(
            [{"jsonrpc": "2.0", "id": m.get("id"), "result": {}} for m in body]
        )
    return web.json_response({"jsonrpc": "2.0", "id": body.get("id", 1), "result": {}})


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    """A recording upstream answering `answer_ok` (a module may override it)."""
    async with recording_upstream(answer_ok) as recorded:
        yield recorded
