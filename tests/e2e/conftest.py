"""Real MCP servers for the end-to-end tests, started once per module and stopped by PID."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.everything import everything_server
from tests.support.processes import HttpServerProcess
from tests.support.sdk_server import sdk_server


@pytest.fixture(scope="module")
def sdk_json() -> Iterator[HttpServerProcess]:
    """An `mcp` 2.x SDK server answering with plain JSON bodies."""
    with sdk_server(json_response=True) as server:
        yield server


@pytest.fixture(scope="module")
def sdk_sse() -> Iterator[HttpServerProcess]:
    """An `mcp` 2.x SDK server answering with SSE streams."""
    with sdk_server(json_response=False) as server:
        yield server


@pytest.fixture(scope="module")
def everything() -> Iterator[HttpServerProcess]:
    """`@modelcontextprotocol/server-everything` in streamableHttp mode (2025-11-25, stateful)."""
    with everything_server() as server:
        yield server
